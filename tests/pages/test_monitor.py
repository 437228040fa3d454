"""The monitor role across every care-team page: read-only, across its sites, phone numbers
hidden. The page list is checked against the app's routes, so a new page cannot skip this."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlmodel import select

from server.alerts import service as alerts
from server.alerts.models import Alert, AlertKind, AlertState
from server.auth import service as auth_service
from server.auth.models import Role
from server.clock import utcnow
from server.participants.models import Participant
from server.schedules.models import EventStatus, ParticipantChoiceValue, ScheduleEvent

PAGE_BLUEPRINTS = (
    "today",
    "participants_pages",
    "participant_page",
    "adherence_pages",
    "status_pages",
)

# Every page GET route, with the path the monitor opens ({a1}, {alert} filled in below).
GET_PAGES = {
    "today.today": "/",
    "today.alerts_page": "/alerts?state=all",
    "today.alert_page": "/alerts/{alert}",
    "participants_pages.participants": "/participants",
    "participant_page.show": "/participants/{a1}",
    "adherence_pages.overview": "/adherence",
    "adherence_pages.participants": "/adherence/participants?measure=due",
    "adherence_pages.export_csv": "/adherence.csv?view=summary",
    "adherence_pages.export_odm": "/adherence/odm.xml?study=HEROES",
    "today.coming_up_csv": "/coming-up.csv",
}
# Pages a monitor may not open at all.
FORBIDDEN_GETS = {
    "participants_pages.enroll": "/participants/new",
    "status_pages.status": "/admin/status",
}
# Every page POST route, with a target that exists at the monitor's site.
POSTS = {
    "today.alert_acknowledge": "/alerts/{alert}/acknowledge",
    "today.alert_resolve": "/alerts/{alert}/resolve",
    "participant_page.complete_event": "/participants/{a1}/events/{event}/complete",
    "participant_page.record_decision": "/participants/{a1}/decisions/{decision}/record",
    "participant_page.set_choice": "/participants/{a1}/choices/scan_modality",
    "participant_page.attest_fact": "/participants/{a1}/entry-gate/facts",
    "participant_page.override_gate": "/participants/{a1}/entry-gate/override",
    "participants_pages.enroll": "/participants/new",
}

A1_PHONE_DIGITS = "612345678"  # +33 6 12 34 56 78
B1_PHONE_DIGITS = "6175550123"


@pytest.fixture
def scene(world, db):
    a1 = world.participants["A1"]
    alert, _ = alerts.open_alert(
        session=db,
        kind=AlertKind.CTDNA_POSITIVE,
        trigger_key="monitor:1",
        participant=a1,
        site_id=a1.site_id,
        summary="ctDNA turned positive",
        now=datetime.now(UTC),
    )
    event = db.exec(
        select(ScheduleEvent)
        .where(ScheduleEvent.participant_id == a1.id)
        .order_by(ScheduleEvent.target_at)
    ).first()
    db.commit()
    return {"a1": a1.id, "alert": alert.id, "event": event.id, "decision": 1}


def test_every_page_route_is_covered_here(app):
    routes = {
        (rule.endpoint, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] in PAGE_BLUEPRINTS
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    covered = {(e, "GET") for e in [*GET_PAGES, *FORBIDDEN_GETS]} | {(e, "POST") for e in POSTS}
    assert routes == covered, "add the new page route to this monitor test"


def test_monitor_reads_every_page_without_a_form_or_a_phone_number(web_as, scene):
    web = web_as("monitor", "A")
    for endpoint, path in GET_PAGES.items():
        resp = web.get(path.format(**scene))
        assert resp.status_code == 200, (endpoint, resp.status_code)
        body = resp.get_data(as_text=True)
        assert A1_PHONE_DIGITS not in re.sub(r"\D", "", body.replace("•", "x")), endpoint
        if resp.mimetype == "text/html":
            forms = re.findall(r'<form[^>]*method="post"[^>]*action="([^"]*)"', body, re.I)
            assert forms == ["/logout"], (endpoint, forms)
    for endpoint, path in FORBIDDEN_GETS.items():
        assert web.get(path).status_code == 403, endpoint


def test_a_nurse_sees_the_full_number_where_the_monitor_does_not(web_as, scene):
    # The check above can fail: the same page shows the number to a role allowed to see it.
    body = web_as("nurse", "A").text(f"/participants/{scene['a1']}")
    assert "+33612345678" in body


def test_monitor_posts_are_refused_and_change_nothing(web_as, scene, db):
    web = web_as("monitor", "A")
    form = {
        "note": "looked at it",
        "completed_on": utcnow().date().isoformat(),
        "choice": "x",
        "value": "mri",
        "reason": "x",
        "study": "HEROES",
        "study_code": "M-001",
        "action": "enroll",
    }
    for endpoint, path in POSTS.items():
        resp = web.post(path.format(**scene), data=form)
        # A decision id that does not exist may be a 404 first; either way, refused.
        allowed = {403, 404} if endpoint == "participant_page.record_decision" else {403}
        assert resp.status_code in allowed, (endpoint, resp.status_code)
    db.expire_all()
    assert db.get(Alert, scene["alert"]).state == AlertState.OPEN
    assert db.get(ScheduleEvent, scene["event"]).status != EventStatus.COMPLETED
    assert db.exec(select(Participant).where(Participant.study_code == "M-001")).first() is None
    assert db.exec(select(ParticipantChoiceValue)).first() is None


def test_a_monitor_of_two_sites_reads_both_with_phones_hidden(client, world, db):
    monitor = auth_service.create_user(
        session=db,
        actor=None,
        email="monitor.ab@example.test",
        full_name="Monitor of A and B",
        password="correct horse battery staple",
        role=Role.MONITOR,
        site_ids=[world.sites["A"].id, world.sites["B"].id],
        now=utcnow(),
    )
    db.commit()
    from tests.conftest import Web

    web = Web(client)
    assert web.login(monitor.email).status_code == 302
    listing = web.text("/participants")
    assert "A-001" in listing and "B-001" in listing
    digits = re.sub(r"\D", "", listing.replace("•", "x"))
    assert A1_PHONE_DIGITS not in digits and B1_PHONE_DIGITS not in digits
    page = web.text(f"/participants/{world.participants['B1'].id}")
    assert "B-001" in page and B1_PHONE_DIGITS not in re.sub(r"\D", "", page.replace("•", "x"))
    assert 'method="post"' not in page.replace('action="/logout"', "").split("</header>", 1)[1]
