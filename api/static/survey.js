// Branching: an item is shown only when the earlier answer it depends on says so.
(function () {
  var form = document.querySelector("form");
  if (!form) return;
  function update() {
    document.querySelectorAll("fieldset[data-show-item]").forEach(function (field) {
      var source = form.querySelector('input[name="item-' + field.dataset.showItem + '"]:checked');
      var wanted = field.dataset.showIn.split(",");
      var show = source !== null && wanted.indexOf(source.value) !== -1;
      field.classList.toggle("hidden", !show);
      if (!show) {
        field.querySelectorAll("input").forEach(function (i) { i.checked = false; });
      }
    });
  }
  form.addEventListener("change", update);
  update();
})();
