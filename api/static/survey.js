// Progressive enhancement only: the survey works without it. After a step loads, the focus goes
// to what changed (the step's heading, or the list of problems) so a screen reader announces it
// and a keyboard starts there; a problem's link puts the focus on its question's first answer.
(function () {
  var target = document.querySelector("[data-focus]");
  if (target) {
    target.focus();
  }
  document.querySelectorAll(".error-summary a[data-target]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      var input = document.getElementById(link.getAttribute("data-target"));
      if (!input) return;
      event.preventDefault();
      input.scrollIntoView({ block: "center" });
      input.focus();
    });
  });
})();
