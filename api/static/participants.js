// Enrollment form niceties; the form works the same without them (the server checks all).
// - the cohort list shows only the chosen study's cohorts, and what they mean;
// - the study's title and the site's name show under their (short) options;
// - the time zone field says which zone an empty value means (the chosen site's);
// - the language follows the site's country (else the study's protocol) until someone picks
//   one by hand;
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

  // The server sends only the chosen study's cohorts (so the form works without this script);
  // the full list is in a <template>, from which the select is rebuilt as the study changes.
  var allCohorts = document.getElementById("enroll-cohorts");

  function showCohorts() {
    var chosen = study.value;
    if (allCohorts) {
      var current = cohort.value;
      cohort.innerHTML = "";
      Array.prototype.forEach.call(allCohorts.content.children, function (node) {
        var study_ = node.getAttribute("data-study");
        if (node.tagName === "OPTION" || !chosen || study_ === chosen) {
          cohort.appendChild(node.cloneNode(true));
        }
      });
      cohort.value = current;
      if (cohort.selectedIndex < 0) cohort.value = "";
    }
    document.querySelectorAll(".cohort-help[data-study], #study-help [data-study], .gate-fields[data-study]").forEach(function (help) {
      help.hidden = help.getAttribute("data-study") !== chosen;
    });
    var choices = cohort.querySelectorAll("optgroup option");
    if (chosen && !cohort.value && choices.length === 1) cohort.value = choices[0].value;
  }

  function showSite() {
    if (!zone || !site) return;
    var info = data.sites[site.value];
    zone.placeholder = info ? "the site's: " + info.tz : "the site's time zone";
    document.querySelectorAll("#site-help [data-site]").forEach(function (help) {
      help.hidden = help.getAttribute("data-site") !== site.value;
    });
  }

  function followLocale() {
    if (!locale || localeTouched) return;
    // The site's language (from its country) when a site is chosen, else the study's.
    var bySite = site && data.sites[site.value] && data.sites[site.value].locale;
    var byStudy = data.studies[study.value] && data.studies[study.value].locale;
    if (bySite || byStudy) locale.value = bySite || byStudy;
  }

  study.addEventListener("change", function () { showCohorts(); followLocale(); });
  if (site) site.addEventListener("change", function () { showSite(); followLocale(); });
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
  showSite();
})();
