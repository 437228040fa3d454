"""The enrolment form at any width and without JavaScript (issue 12, item 5): short option texts
with their meaning below the field, only the chosen study's cohorts, the language of the site's
country by default, and a preview that gives each target date its weekday and offset."""

from __future__ import annotations

import re
from typing import Any

import pytest

from server.auth.models import Role
from server.participants.rules import default_locale
from tests import factories
from tests.conftest import Web
from tests.pages.test_participants_pages import NEW, form


def select_html(html: str, name: str) -> str:
    start = html.index(f'<select id="{name}"')
    return html[start : html.index("</select>", start)]


def selected(html: str, name: str) -> str | None:
    found = re.search(r'<option value="([^"]*)"\s*selected', select_html(html, name))
    return found.group(1) if found else None


@pytest.fixture
def two_studies(world: Any, db: Any) -> None:
    factories.make_study(db, "STOP-HER2", "stop-her2")
    db.commit()


@pytest.mark.parametrize(
    ("country", "locale"),
    [
        ("FR", "fr"),
        ("fr", "fr"),
        ("RE", "fr"),
        ("CN", "zh"),
        ("TW", "zh"),
        ("US", "en"),
        ("BE", "en"),
        ("CH", "en"),
        (None, "en"),
    ],
)
def test_the_language_of_a_sites_country(country, locale):
    assert default_locale(country) == locale


def test_the_language_defaults_to_the_sites(web_as, world, db, app, two_studies):
    # Site A is in France, site B in the United States; HEROES' protocol says French.
    assert selected(web_as("coordinator", "A").text(NEW), "locale") == "fr"
    assert selected(web_as("coordinator", "B").text(NEW), "locale") == "en"
    # Two sites, none chosen yet, two studies: English until a site or study says otherwise.
    both = factories.make_user(
        db, "both@example.test", Role.COORDINATOR, [world.sites["A"], world.sites["B"]]
    )
    db.commit()
    web = Web(app.test_client())
    assert web.login(both.email).status_code == 302
    html = web.text(NEW)
    assert selected(html, "locale") == "en"
    # The script gets each site's language to follow the site chosen.
    data = re.search(r'<script type="application/json" id="enroll-data">(.*?)</script>', html)
    assert data is not None
    assert f'"{world.sites["A"].id}": {{"locale": "fr", "tz": "Europe/Paris"}}' in data.group(1)


def test_only_the_chosen_studys_cohorts_are_offered_without_javascript(web_as, world, two_studies):
    web = web_as("coordinator", "A")
    html = web.text(NEW)
    # No study chosen: every study's cohorts, grouped by study.
    assert re.findall(r'<optgroup label="([^"]+)"', select_html(html, "cohort")) == [
        "HEROES",
        "STOP-HER2",
    ]
    # "Show this study's cohorts" (shown without JavaScript) asks the server again: nothing is
    # checked or saved, the values stay, and the cohort list is the study's.
    assert re.search(r"<noscript><button [^>]*>Show this study.s cohorts</button>", html)
    resp = web.post(NEW, data={**form(world, cohort="", study_code=""), "action": "refresh"})
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    cohorts = select_html(html, "cohort")
    assert re.findall(r'<optgroup label="([^"]+)"', cohorts) == ["HEROES"]
    assert 'value="HEROES:stop"' in cohorts and "STOP-HER2" not in cohorts
    assert 'class="field-error"' not in html and 'id="timeline"' not in html
    assert selected(html, "study") == "HEROES"
    # The script's full list is kept apart, in a <template>.
    template = html[html.index('<template id="enroll-cohorts">') :]
    assert "STOP-HER2:stop" in template[: template.index("</template>")]
    # A preview with the study set shows its cohorts only, too.
    resp = web.post(NEW, data={**form(world, study="STOP-HER2", cohort=""), "action": "preview"})
    assert resp.status_code == 422
    cohorts = select_html(resp.get_data(as_text=True), "cohort")
    assert re.findall(r'<optgroup label="([^"]+)"', cohorts) == ["STOP-HER2"]


def test_option_texts_are_short_and_their_meaning_is_written_below(web_as, world, two_studies):
    html = web_as("coordinator", "A").text(NEW)
    for name in ("study", "site_id", "status"):
        texts = re.findall(r"<option [^>]*>([^<]*)</option>", select_html(html, name))
        assert texts and max(len(t) for t in texts) <= 26, (name, texts)
    # The study's title and the site's name are under their fields.
    assert re.search(r'<p class="choice-help" data-study="HEROES"[^>]*>[^<]*HEROES', html)
    assert f'data-site="{world.sites["A"].id}" >Site SITE-A · Europe/Paris</p>' in html
    assert "<li><strong>Off treatment, monitored</strong>: therapy stopped;" in html


def test_the_preview_gives_each_target_its_weekday_and_offset(web_as, world):
    web = web_as("coordinator", "A")
    resp = web.post(NEW, data={**form(world, anchor_date="2027-01-04"), "action": "preview"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    # HEROES "stop": the first ctDNA draw 12 weeks after the anchor, the questionnaire monthly.
    assert (
        '<span class="nowrap">Mon 2027-03-29</span> <span class="muted nowrap">· week 12</span>'
        in html
    )
    assert (
        '<span class="nowrap">Sun 2027-04-04</span> <span class="muted nowrap">· month 3</span>'
        in html
    )
