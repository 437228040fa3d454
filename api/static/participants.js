// Enrollment form niceties; the form works the same without them (the server checks all).
// - the cohort list shows only the chosen study's cohorts, and what they mean;
// - the time zone field says which zone an empty value means (the chosen site's);
// - the language follows the study's protocol until someone picks one by hand;
// - a double click sends the form once (a second "Enroll" would only hear "code already used").
(function () {
  "use strict";
  var dataEl = document.getElementById("enroll-data");
  var study = document.getElementById("study");
  var cohort = document.getElementById("cohort");
  var site = document.getElementById("site_id");
  var zone = document.getElementById("timezone");
  var locale = document.getElementById("locale");
  if (!dataEl || !study || !cohort) return;
  var data = JSON.parse(dataEl.textContent);
  var localeTouched = false;

  function showCohorts() {
    var groups = cohort.querySelectorAll("optgroup");
    var chosen = study.value;
    var visible = [];
    groups.forEach(function (group) {
      var mine = !chosen || group.getAttribute("data-study") === chosen;
      group.hidden = !mine;
      group.disabled = !mine;
      if (mine) visible = visible.concat(Array.prototype.slice.call(group.querySelectorAll("option")));
    });
    document.querySelectorAll(".cohort-help").forEach(function (help) {
      help.hidden = help.getAttribute("data-study") !== chosen;
    });
    var selected = cohort.selectedOptions[0];
    if (selected && selected.value && selected.parentElement.disabled) cohort.value = "";
    if (chosen && !cohort.value && visible.length === 1) cohort.value = visible[0].value;
  }

  function showZone() {
    if (!zone || !site) return;
    var tz = data.sites[site.value];
    zone.placeholder = tz ? "the site's: " + tz : "the site's time zone";
  }

  function followStudyLocale() {
    var info = data.studies[study.value];
    if (locale && info && !localeTouched) locale.value = info.locale;
  }

  study.addEventListener("change", function () { showCohorts(); followStudyLocale(); });
  if (site) site.addEventListener("change", showZone);
  if (locale) locale.addEventListener("change", function () { localeTouched = true; });
  // A form shown again (preview, errors) keeps what the user chose.
  localeTouched = document.querySelector("#enroll-form input[name=digest]") !== null ||
    document.getElementById("form-errors") !== null;
  var form = document.getElementById("enroll-form");
  var sending = false;
  if (form) {
    form.addEventListener("submit", function (event) {
      if (sending) event.preventDefault();
      sending = true;
    });
    // Back to this page from the next one: it may be sent again.
    window.addEventListener("pageshow", function () { sending = false; });
  }
  showCohorts();
  showZone();
})();
