"""Issue 17 on the pages: the enrolment form asks for the gate facts a person attests and its
preview shows the gate and both paths; the participant page shows each fact with its
provenance and attester, takes the stop date and the attestations, and lets the investigator
override with a reason (audited)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlmodel import select

from server.audit import AuditEvent
from server.participants.models import EligibilityFact, Participant
from server.schedules.models import ScheduleEvent
from tests import clock, factories
from tests.gates.test_entry_gates import P, enrol, post_ctdna
from tests.pages.test_participants_pages import NEW, form

DIGEST = re.compile(r'name="digest" value="([0-9a-f]+)"')


def today():
    return clock.today("Europe/Paris")


def screening_form(world, **kw):
    values = form(
        world,
        status="screening",
        cohort="",
        anchor_date=(today() + timedelta(days=21)).isoformat(),
        **{"gate.baseline_ctdna.value": "", "gate.baseline_ctdna.observed_on": ""},
    )
    values.update(kw)
    return values


@pytest.fixture
def free_her(world, db):
    factories.make_study(db, "FREE-HER", "free-her")
    db.commit()


def test_the_form_starts_in_screening_and_shows_the_gate(web_as, world):
    html = web_as("coordinator").text(NEW)
    assert re.search(r'<option value="screening"\s+selected>', html)
    gate = html[html.index('id="gate-HEROES"') :]
    gate = gate[: gate.index("</fieldset>")]
    assert "Entry gate: Baseline Signatera ctDNA decides the path" in gate
    assert "from the result of ctdna baseline" in gate
    assert 'name="gate.stop_date"' in gate


def test_the_screening_preview_shows_the_gate_and_both_paths_then_enrols(web_as, world, db):
    web = web_as("coordinator")
    data = screening_form(world)
    resp = web.post(NEW, {**data, "action": "preview"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200, html
    paths = html[html.index('id="gate-paths"') :]
    paths = paths[: paths.index("</ul>")]
    assert 'data-outcome="pass"' in paths and "34 events" in paths
    assert 'data-outcome="fail"' in paths and "continues anti-HER2 maintenance" in paths
    assert 'data-outcome="wait"' in paths
    # Only the gate's draw is planned in screening.
    assert 'data-count="1"' in html and "Baseline Signatera ctDNA draw" in html
    digest = DIGEST.search(html).group(1)  # type: ignore[union-attr]
    done = web.post(NEW, {**data, "action": "enroll", "digest": digest})
    assert done.status_code == 302, done.get_data(as_text=True)
    participant = db.exec(select(Participant).where(Participant.study_code == "A-100")).one()
    assert participant.status.value == "screening"
    keys = [
        e.key
        for e in db.exec(
            select(ScheduleEvent).where(ScheduleEvent.participant_id == participant.id)
        )
    ]
    assert keys == ["ctdna_baseline:1"]
    page = web.text(done.headers["Location"])
    assert "1 events planned (in screening: the entry gate decides" in page
    assert 'id="entry-gate"' in page and "Waiting for:" in page


def test_free_her_asks_for_the_attested_facts(web_as, world, db, free_her):
    web = web_as("coordinator")
    base = screening_form(world, study="FREE-HER", cohort="FREE-HER:stop")
    page = web.text(NEW)
    fieldset = page[page.index('id="gate-FREE-HER"') :]
    fieldset = fieldset[: fieldset.index("</fieldset>")]
    assert fieldset.count("attested by you") == 2
    # Past screening without them: refused at each fact, nothing saved.
    resp = web.post(NEW, {**base, "status": "off_treatment_monitoring", "action": "preview"})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 422
    assert 'id="eligibility.screening_ctdna-error"' in html
    assert 'id="eligibility.complete_radiological_remission-error"' in html
    # A date that cannot be read is named at its fact.
    bad = web.post(
        NEW,
        {
            **base,
            "gate.complete_radiological_remission.value": "yes",
            "gate.complete_radiological_remission.observed_on": "yesterday",
            "action": "preview",
        },
    )
    assert bad.status_code == 422
    assert "a date, YYYY-MM-DD" in bad.get_data(as_text=True)
    # Attested as absent in screening: enrolled, and the gate decides at once.
    data = {
        **base,
        "gate.complete_radiological_remission.value": "no",
        "gate.complete_radiological_remission.observed_on": today().isoformat(),
    }
    preview = web.post(NEW, {**data, "action": "preview"}).get_data(as_text=True)
    digest = DIGEST.search(preview).group(1)  # type: ignore[union-attr]
    assert web.post(NEW, {**data, "action": "enroll", "digest": digest}).status_code == 302
    participant = db.exec(select(Participant).where(Participant.study_code == "A-100")).one()
    assert participant.status.value == "continues_maintenance"
    fact = db.exec(
        select(EligibilityFact).where(EligibilityFact.participant_id == participant.id)
    ).one()
    assert fact.attested_by_user_id == world.staff[("coordinator", "A")].id


def test_the_participant_page_shows_the_facts_and_takes_the_stop_date(web_as, api_as, world, db):
    api = api_as("coordinator")
    p = enrol(api, world)
    post_ctdna(api, "G-001", "BASE-NEG", "negative")
    web = web_as("coordinator")
    html = web.text(f"/participants/{p['id']}")
    section = html[html.index('id="entry-gate"') :]
    section = section[: section.index("</section>")]
    row = re.search(r'<tr data-fact="baseline_ctdna">(.*?)</tr>', section, re.S).group(1)  # type: ignore[union-attr]
    assert "negative" in row and "result #" in row and "the system (from the result)" in row
    assert "Waiting for:" in section and 'id="confirm-stop-date"' in section
    stop = today() + timedelta(days=21)
    resp = web.post(
        f"/participants/{p['id']}/entry-gate/facts",
        {"fact": "stop_date", "observed_on": stop.isoformat(), "note": "last infusion"},
    )
    assert resp.status_code == 303, resp.get_data(as_text=True)
    db.expire_all()
    participant = db.get(Participant, p["id"])
    assert participant.status.value == "off_treatment_monitoring"
    assert participant.anchor_date == stop
    page = web.text(f"/participants/{p['id']}")
    assert "The entry gate passed" in page
    assert "coordinator.a" in page[page.index('data-fact="stop_date"') :]
    # The audit on the page says what happened.
    audit = page[page.index('id="audit"') :]
    assert "Entry gate passed: monitoring" in audit and "Eligibility fact recorded" in audit
    # Decided: no more forms to attest or confirm.
    section = page[page.index('id="entry-gate"') :]
    assert 'id="confirm-stop-date"' not in section[: section.index("</section>")]


def test_a_bad_stop_date_form_comes_back_with_the_message(web_as, api_as, world, db):
    p = enrol(api_as("coordinator"), world)
    web = web_as("coordinator")
    resp = web.post(f"/participants/{p['id']}/entry-gate/facts", {"fact": "stop_date"})
    assert resp.status_code == 422
    assert "a date (YYYY-MM-DD) is required" in resp.get_data(as_text=True)
    db.expire_all()
    mine = select(EligibilityFact).where(EligibilityFact.participant_id == p["id"])
    assert db.exec(mine).all() == []


def test_the_investigator_overrides_from_the_page(web_as, api_as, world, db):
    api = api_as("coordinator")
    p = enrol(api, world)
    post_ctdna(api, "G-001", "BASE-POS", "positive")
    coordinator_page = web_as("coordinator").text(f"/participants/{p['id']}")
    assert "Continues maintenance" in coordinator_page
    assert 'id="gate-override-form"' not in coordinator_page
    forged = web_as("coordinator").post(
        f"/participants/{p['id']}/entry-gate/override",
        {"outcome": "pass", "reason": "x", "stop_date": today().isoformat()},
    )
    assert forged.status_code == 403
    web = web_as("investigator")
    page = web.text(f"/participants/{p['id']}")
    assert 'id="gate-override-form"' in page
    no_reason = web.post(
        f"/participants/{p['id']}/entry-gate/override",
        {"outcome": "pass", "reason": "", "stop_date": today().isoformat()},
    )
    assert no_reason.status_code == 422
    stop = today() + timedelta(days=14)
    ok = web.post(
        f"/participants/{p['id']}/entry-gate/override",
        {"outcome": "pass", "reason": "tumour board: stop anyway", "stop_date": stop.isoformat()},
    )
    assert ok.status_code == 303, ok.get_data(as_text=True)
    db.expire_all()
    assert db.get(Participant, p["id"]).status.value == "off_treatment_monitoring"
    row = db.exec(select(AuditEvent).where(AuditEvent.action == "entry_gate.override")).one()
    assert row.reason == "tumour board: stop anyway"
    page = web.text(f"/participants/{p['id']}")
    assert "Entry gate overridden" in page and "tumour board: stop anyway" in page
    assert api.get(f"{P}/{p['id']}").get_json()["anchor_date"] == stop.isoformat()
