"""The Today page and the alert pages: every section shows my sites' rows and hides the others',
acknowledge and resolve from the list (one click, notes, 422 without a note), read-only monitors,
404 for another site, no open redirect; the results watchdog keeps its behaviour."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

import pytest
import time_machine
from sqlmodel import select

from notifications import outbox
from notifications.models import (
    PRIORITY_PARTICIPANT,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from server import audit, worklist
from server.alerts.models import Alert, AlertLog, AlertState
from server.auth.models import Role, SiteMembership
from server.messaging import set_sms_consent
from server.participants.models import Locale, ParticipantStatus
from server.results import service as results
from server.results.models import ResultKind
from server.schedules import service as schedules
from server.schedules.models import Decision, ScheduleEvent
from tests import factories
from tests.conftest import Web

T0 = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)  # 10:00 in Paris (CEST), 04:00 in Boston (EDT)


def at(moment: datetime | str) -> Any:
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment).replace(tzinfo=UTC)
    return time_machine.travel(moment, tick=False)


def now() -> datetime:
    return datetime.now(UTC)


def section(html: str, section_id: str) -> str:
    """The HTML of one Today section."""
    start = html.index(f'id="{section_id}"')
    return html[start : html.index("</section>", start)]


def ids(html: str, attr: str) -> list[int]:
    """The ids of the rows (data-<attr>="...") in order."""
    return [int(v) for v in re.findall(rf'<tr data-{attr}="(\d+)"', html)]


def count(html: str) -> int:
    found = re.search(r'<span class="count">(\d+)</span>', html)
    assert found, html[:300]
    return int(found.group(1))


def events_of(db: Any, participant_id: int) -> dict[str, ScheduleEvent]:
    db.expire_all()
    rows = db.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == participant_id))
    return {e.key: e for e in rows}


@pytest.fixture
def care_team(world: factories.World, db: Any) -> None:
    """Staff of both sites with verified phones; the nurses are on call: no dead route."""
    for (role, site), user in world.staff.items():
        if role == "monitor":
            continue
        user.phone_e164 = f"+3361000{'0' if site == 'A' else '1'}{list(Role).index(Role(role))}"
        user.is_phone_verified = True
        db.add(user)
        if role == "nurse":
            membership = db.exec(
                select(SiteMembership).where(SiteMembership.user_id == user.id)
            ).one()
            membership.is_on_call = True
            db.add(membership)
    db.commit()


def positive_ctdna(db: Any, code: str) -> int:
    """A negative baseline then a positive ctDNA through the results service: an alert opens."""
    for accession, call, collected in (
        (f"{code}-BASE", "negative", "2026-12-14T09:00:00+01:00"),
        (f"{code}-POS", "positive", "2027-03-29T09:00:00+02:00"),
    ):
        done = results.ingest(
            session=db,
            kind=ResultKind.CTDNA,
            source="natera",
            accession_id=accession,
            study_code=code,
            study_key="HEROES",
            now=now(),
            actor="lab:test",
            fields={
                "collected_at": datetime.fromisoformat(collected),
                "call": call,
                "mtm_per_ml": 0.4,
            },
        )
    db.commit()
    assert done.alert_id is not None
    return done.alert_id


def alert_of(db: Any, alert_id: int) -> Alert:
    db.expire_all()
    alert = db.get(Alert, alert_id)
    assert alert is not None
    return alert


def audit_actions(db: Any, alert_id: int) -> list[str]:
    rows = db.exec(
        select(audit.AuditEvent).where(
            audit.AuditEvent.entity == "alert", audit.AuditEvent.entity_id == str(alert_id)
        )
    ).all()
    return [r.action for r in rows]


# --- alerts on Today -----------------------------------------------------------------------------


def test_open_alerts_of_my_site_only_with_local_time_and_tier(world, db, web_as, care_team):
    with at(T0):
        a = positive_ctdna(db, "A-001")
        b = positive_ctdna(db, "B-001")
        html = web_as("nurse", "A").text("/")
        mine = section(html, "open-alerts")
        assert ids(mine, "alert-id") == [a] and count(mine) == 1
        assert "A-001" in mine and "B-001" not in html
        assert f'href="/participants/{world.participants["A1"].id}"' in mine
        assert "ctDNA turned positive" in mine and 'class="badge level-critical">Critical' in mine
        assert "2027-03-30 10:00 CEST" in mine  # opened, in the site's time zone
        assert "tier 1" in mine and "next 2027-03-30 10:15 CEST" in mine
        # The nurse of site B sees theirs, in Boston time.
        other = section(web_as("nurse", "B").text("/"), "open-alerts")
        assert ids(other, "alert-id") == [b] and "2027-03-30 04:00 EDT" in other


def test_most_severe_first_then_oldest(world, db, web_as, care_team):
    from server.alerts import service as alerts
    from server.alerts.models import AlertKind

    with at("2027-03-30T07:00:00"):
        a1 = world.participants["A1"]
        overdue, _ = alerts.open_alert(
            session=db,
            kind=AlertKind.RESULT_OVERDUE,
            trigger_key="test:overdue",
            participant=a1,
            site_id=a1.site_id,
            summary="no ctdna result",
            now=now(),
        )
        db.commit()
    with at(T0):
        critical = positive_ctdna(db, "A-002")
        html = section(web_as("nurse", "A").text("/"), "open-alerts")
    # The critical alert, opened an hour later, comes before the older normal one.
    assert ids(html, "alert-id") == [critical, overdue.id]


def test_acknowledge_from_today_moves_the_alert_to_acknowledged(world, db, web_as, care_team):
    with at(T0):
        alert_id = positive_ctdna(db, "A-001")
        web = web_as("nurse", "A")
        html = web.text("/")
        assert ids(section(html, "open-alerts"), "alert-id") == [alert_id]
        assert ids(section(html, "acknowledged-alerts"), "alert-id") == []
        assert 'name="next" value="/"' in html
        resp = web.post(
            f"/alerts/{alert_id}/acknowledge", data={"note": "calling her now", "next": "/"}
        )
        assert resp.status_code == 302 and resp.headers["Location"] == "/"
        html = web.text("/")
    assert "Alert for A-001 acknowledged" in html
    assert ids(section(html, "open-alerts"), "alert-id") == []
    acked = section(html, "acknowledged-alerts")
    assert ids(acked, "alert-id") == [alert_id] and "by nurse.a on the web" in acked
    # In the acknowledged section only the resolve form remains.
    assert "Resolve</button>" in acked and "Acknowledge</button>" not in acked
    alert = alert_of(db, alert_id)
    nurse = world.staff[("nurse", "A")]
    assert alert.state == AlertState.ACKNOWLEDGED and alert.ack_channel == "web"
    assert alert.acknowledged_by_user_id == nurse.id and alert.next_tier_at is None
    log = db.exec(
        select(AlertLog).where(AlertLog.alert_id == alert_id, AlertLog.what == "acknowledged")
    ).one()
    assert log.actor == f"staff:{nurse.id}" and log.detail["note"] == "calling her now"
    record = db.exec(
        select(audit.AuditEvent).where(audit.AuditEvent.action == "alert.acknowledge")
    ).one()
    assert record.actor_user_id == nurse.id and record.reason == "calling her now"
    # Further tiers stopped: nothing for this alert is still waiting to go out.
    pending = db.exec(
        select(OutboxMessage).where(
            OutboxMessage.ref == f"alert:{alert_id}",
            OutboxMessage.status == MessageStatus.PENDING,
        )
    ).all()
    assert pending == []


def test_a_second_acknowledge_says_who_did_it_and_changes_nothing(world, db, web_as, care_team):
    with at(T0):
        alert_id = positive_ctdna(db, "A-001")
        first = web_as("nurse", "A")
        assert first.post(f"/alerts/{alert_id}/acknowledge", data={"next": "/"}).status_code == 302
        second = web_as("coordinator", "A")
        resp = second.post(f"/alerts/{alert_id}/acknowledge", data={"next": "/"})
        assert resp.status_code == 302
        html = second.text("/")
    assert "already acknowledged by nurse.a" in html
    alert = alert_of(db, alert_id)
    assert alert.acknowledged_by_user_id == world.staff[("nurse", "A")].id
    assert audit_actions(db, alert_id).count("alert.acknowledge") == 1
    whats = db.exec(select(AlertLog.what).where(AlertLog.alert_id == alert_id)).all()
    assert whats.count("acknowledged") == 1 and "ack_repeated" in whats


def test_resolve_needs_a_note_422_and_nothing_changes(world, db, web_as, care_team):
    with at(T0):
        alert_id = positive_ctdna(db, "A-001")
        web = web_as("nurse", "A")
        for note in ("", "   "):
            resp = web.post(f"/alerts/{alert_id}/resolve", data={"note": note, "next": "/"})
            assert resp.status_code == 422
            html = resp.get_data(as_text=True)
            # Today again, the error next to this alert's note field.
            assert "Alerts to acknowledge" in html
            error = re.search(rf'id="resolve-note-{alert_id}-error"[^>]*>([^<]+)<', html)
            assert error and "required" in error.group(1)
            assert ids(section(html, "open-alerts"), "alert-id") == [alert_id]
        # From the alert's own page, its page comes back with the error.
        resp = web.post(
            f"/alerts/{alert_id}/resolve", data={"note": "", "next": f"/alerts/{alert_id}"}
        )
        assert resp.status_code == 422
        assert 'id="resolve-note-error"' in resp.get_data(as_text=True)
    alert = alert_of(db, alert_id)
    assert alert.state == AlertState.OPEN and alert.resolved_at is None
    assert "alert.resolve" not in audit_actions(db, alert_id)
    assert "alert.acknowledge" not in audit_actions(db, alert_id)


def test_resolve_with_a_note_takes_the_alert_off_today(world, db, web_as, care_team):
    with at(T0):
        alert_id = positive_ctdna(db, "A-001")
        web = web_as("nurse", "A")
        resp = web.post(
            f"/alerts/{alert_id}/resolve",
            data={"note": "oncologist informed; redraw booked", "next": "/"},
        )
        assert resp.status_code == 302 and resp.headers["Location"] == "/"
        html = web.text("/")
        assert "Alert for A-001 resolved" in html
        assert ids(section(html, "open-alerts"), "alert-id") == []
        assert ids(section(html, "acknowledged-alerts"), "alert-id") == []
        # Resolving again is refused politely, not a 500.
        again = web.post(f"/alerts/{alert_id}/resolve", data={"note": "twice", "next": "/"})
        assert again.status_code == 302
        assert "already resolved by nurse.a" in web.text("/")
    alert = alert_of(db, alert_id)
    assert alert.state == AlertState.RESOLVED
    assert alert.resolution_note == "oncologist informed; redraw booked"
    assert audit_actions(db, alert_id).count("alert.resolve") == 1


def test_monitor_sees_alerts_without_forms_and_forged_posts_are_403(world, db, web_as, care_team):
    with at(T0):
        alert_id = positive_ctdna(db, "A-001")
        monitor = web_as("monitor", "A")
        html = monitor.text("/")
        assert ids(section(html, "open-alerts"), "alert-id") == [alert_id]
        assert "/acknowledge" not in html and "/resolve" not in html
        assert "Acknowledge</button>" not in html and "Resolve</button>" not in html
        detail = monitor.text(f"/alerts/{alert_id}")
        assert "/acknowledge" not in detail and "/resolve" not in detail
        assert monitor.post(f"/alerts/{alert_id}/acknowledge", data={}).status_code == 403
        resolve = monitor.post(f"/alerts/{alert_id}/resolve", data={"note": "x", "next": "/"})
        assert resolve.status_code == 403
    alert = alert_of(db, alert_id)
    assert alert.state == AlertState.OPEN
    assert audit_actions(db, alert_id) == ["alert.open"]


def test_resuming_treatment_from_the_page_needs_participant_write(world, db, web_as, care_team):
    with at(T0):
        alert_id = positive_ctdna(db, "A-001")
        nurse = web_as("nurse", "A")
        assert 'name="resume_treatment"' not in nurse.text(f"/alerts/{alert_id}")
        forged = nurse.post(
            f"/alerts/{alert_id}/resolve", data={"note": "resumed", "resume_treatment": "on"}
        )
        assert forged.status_code == 403
        assert alert_of(db, alert_id).state == AlertState.OPEN
        investigator = web_as("investigator", "A")
        assert 'name="resume_treatment"' in investigator.text(f"/alerts/{alert_id}")
        resp = investigator.post(
            f"/alerts/{alert_id}/resolve",
            data={"note": "trastuzumab resumed", "resume_treatment": "on"},
        )
        assert resp.status_code == 302
    db.expire_all()
    assert alert_of(db, alert_id).state == AlertState.RESOLVED
    assert world.participants["A1"].status == ParticipantStatus.RESUMED_TREATMENT


def test_another_sites_alert_is_404_for_every_action(world, db, web_as, care_team):
    with at(T0):
        alert_id = positive_ctdna(db, "B-001")
        web = web_as("nurse", "A")
        assert web.get(f"/alerts/{alert_id}").status_code == 404
        assert web.post(f"/alerts/{alert_id}/acknowledge", data={}).status_code == 404
        resp = web.post(f"/alerts/{alert_id}/resolve", data={"note": "x", "next": "/"})
        assert resp.status_code == 404
        # A monitor of site A gets the same 404, not a 403 that would confirm it exists.
        monitor = web_as("monitor", "A")
        assert monitor.post(f"/alerts/{alert_id}/acknowledge", data={}).status_code == 404
    assert alert_of(db, alert_id).state == AlertState.OPEN


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example",
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "evil.example",
    ],
)
def test_an_unsafe_next_does_not_leave_the_site(world, db, web_as, care_team, target):
    with at(T0):
        alert_id = positive_ctdna(db, "A-001")
        web = web_as("nurse", "A")
        resp = web.post(f"/alerts/{alert_id}/acknowledge", data={"next": target})
    assert resp.status_code == 302
    assert resp.headers["Location"] == f"/alerts/{alert_id}"
    assert alert_of(db, alert_id).state == AlertState.ACKNOWLEDGED


def test_a_safe_next_keeps_the_site_filter(world, db, web_as, care_team):
    with at(T0):
        alert_id = positive_ctdna(db, "A-001")
        web = web_as("nurse", "A")
        site = world.sites["A"].id
        resp = web.post(f"/alerts/{alert_id}/acknowledge", data={"next": f"/?site={site}"})
    assert resp.headers["Location"] == f"/?site={site}"


# --- overdue events ------------------------------------------------------------------------------


def test_overdue_events_of_my_sites_in_the_last_30_days(world, db, web_as):
    a1, a2 = world.participants["A1"], world.participants["A2"]
    # A2 had its ctDNA draw on time: it is not overdue.
    with at("2027-04-01T10:00:00"):
        ev = events_of(db, a2.id)["ctdna:1"]
        schedules.complete_event(
            session=db,
            participant=a2,
            event=ev,
            completed_on=date(2027, 4, 1),
            now=now(),
            actor="test",
        )
        db.commit()
    with at("2027-03-30T10:00:00"):
        # Nothing has closed in the last 30 days yet (the baseline closed in December).
        html = section(web_as("nurse", "A").text("/"), "overdue-events")
        assert count(html) == 0 and "Nothing overdue." in html
    with at("2027-04-08T10:00:00"):
        html = section(web_as("nurse", "A").text("/"), "overdue-events")
        b_html = section(web_as("nurse", "B").text("/"), "overdue-events")
    a1_events = events_of(db, a1.id)
    # ctdna:1 closed on 2027-04-05 (Paris); imaging:1 is still open until 04-12.
    assert ids(html, "event-id") == [a1_events["ctdna:1"].id]
    assert "A-001" in html and "A-002" not in html and "B-001" not in html
    assert "Signatera ctDNA draw" in html
    assert re.search(r">2027-03-22</span> – <span[^>]*>2027-04-05<", html)
    assert re.search(r'<td data-label="Days overdue" class="num">3</td>', html)
    assert ">not recorded<" in html  # not yet marked missed by the job: still overdue
    b1 = world.participants["B1"]
    assert ids(b_html, "event-id") == [events_of(db, b1.id)["ctdna:1"].id]
    assert "A-001" not in b_html
    # Past 30 days the row has left the worklist.
    with at("2027-05-08T10:00:00"):
        html = section(web_as("nurse", "A").text("/"), "overdue-events")
    assert events_of(db, a1.id)["ctdna:1"].id not in ids(html, "event-id")


def test_missed_events_of_withdrawn_participants_are_not_listed(world, db, web_as):
    a1 = world.participants["A1"]
    with at("2027-04-08T10:00:00"):
        a1.status = ParticipantStatus.WITHDRAWN
        db.add(a1)
        db.commit()
        html = section(web_as("nurse", "A").text("/"), "overdue-events")
    assert "A-001" not in html


# --- results overdue -----------------------------------------------------------------------------


def _draw_done(db: Any, participant: Any, on: date) -> ScheduleEvent:
    event = events_of(db, participant.id)["ctdna:1"]
    schedules.complete_event(
        session=db,
        participant=participant,
        event=event,
        completed_on=on,
        now=now(),
        actor="test",
    )
    db.commit()
    return event


def test_results_overdue_after_the_turnaround_at_my_sites(world, db, web_as):
    a1, b1 = world.participants["A1"], world.participants["B1"]
    with at("2027-03-30T10:00:00"):
        a_draw = _draw_done(db, a1, date(2027, 3, 29))
        _draw_done(db, b1, date(2027, 3, 29))
    with at("2027-04-12T10:00:00"):
        # 14 days: the turnaround is not yet exceeded.
        assert count(section(web_as("nurse", "A").text("/"), "overdue-results")) == 0
    with at("2027-04-14T10:00:00"):
        html = section(web_as("nurse", "A").text("/"), "overdue-results")
        b_html = section(web_as("nurse", "B").text("/"), "overdue-results")
    assert ids(html, "event-id") == [a_draw.id] and "B-001" not in html
    assert "2027-03-29" in html and "14 days" in html
    assert re.search(r'<td data-label="Days waiting" class="num">16</td>', html)
    assert "B-001" in b_html and "A-001" not in b_html
    # The result arrives and links to the draw: the row goes.
    with at("2027-04-14T11:00:00"):
        results.ingest(
            session=db,
            kind=ResultKind.CTDNA,
            source="natera",
            accession_id="LATE-1",
            study_code="A-001",
            study_key="HEROES",
            now=now(),
            actor="lab:test",
            fields={
                "collected_at": datetime(2027, 3, 29, 7, tzinfo=UTC),
                "call": "negative",
                "mtm_per_ml": 0.0,
            },
        )
        db.commit()
        html = section(web_as("nurse", "A").text("/"), "overdue-results")
    assert count(html) == 0 and "No result overdue." in html


def test_the_results_watchdog_still_opens_one_alert_per_overdue_draw(world, db):
    a1 = world.participants["A1"]
    with at("2027-03-30T10:00:00"):
        draw = _draw_done(db, a1, date(2027, 3, 29))
    with at("2027-04-12T10:00:00"):
        assert results.overdue_results(session=db, now=now()) == {"opened": 0}
    with at("2027-04-14T10:00:00"):
        assert results.overdue_results(session=db, now=now()) == {"opened": 1}
        assert results.overdue_results(session=db, now=now()) == {"opened": 0}
    alert = db.exec(select(Alert).where(Alert.trigger_key == f"overdue:{draw.id}")).one()
    assert alert.kind.value == "result_overdue" and alert.participant_id == a1.id
    assert alert.summary == (
        f"Signatera ctDNA draw #1, done {draw.completed_on}: no result after the 14-day turnaround"
    )


def test_a_draw_completed_with_its_result_recorded_by_hand_awaits_nothing(world, db, web_as):
    a1 = world.participants["A1"]
    with at("2027-03-30T10:00:00"):
        schedules.complete_event(
            session=db,
            participant=a1,
            event=events_of(db, a1.id)["ctdna:1"],
            completed_on=date(2027, 3, 29),
            outcome={"ctdna": "negative"},
            now=now(),
            actor="test",
        )
        db.commit()
    with at("2027-04-14T10:00:00"):
        assert results.overdue_results(session=db, now=now()) == {"opened": 0}
        html = section(web_as("nurse", "A").text("/"), "overdue-results")
    assert count(html) == 0


# --- unreachable by SMS --------------------------------------------------------------------------


def _sms(db: Any, participant: Any, key: str, status: str, error: int | None = None) -> None:
    """A participant SMS that went out, then the provider's status callback."""
    row, _ = outbox.enqueue(
        db,
        dedupe_key=key,
        category=MessageCategory.REMINDER,
        kind="test",
        to=participant.phone_e164,
        locale="fr",
        body="Rappel",
        priority=PRIORITY_PARTICIPANT,
        participant_id=participant.id,
        now=now(),
    )
    outbox.apply_callback(
        db,
        message_id=row.id,
        sid="SM" + key.rjust(32, "0"),
        provider_status=status,
        error_code=error,
        now=now(),
    )
    db.commit()


def test_unreachable_participants_and_why(world, db, web_as):
    a1, a2 = world.participants["A1"], world.participants["A2"]
    with at(T0):
        html = section(web_as("nurse", "A").text("/"), "unreachable")
        # A2 has no phone; A1 has a phone and consent; B1 (no consent) is another site's.
        assert ids(html, "participant-id") == [a2.id]
        assert "no phone number" in html and "B-001" not in html
        _sms(db, a1, "1", "undelivered", 30003)
        html = section(web_as("nurse", "A").text("/"), "unreachable")
        assert ids(html, "participant-id") == [a1.id, a2.id]
        assert "last SMS undelivered, error 30003 on 2027-03-30" in html
        assert "+33612345678" in html  # a nurse sees the number to call
        monitor = section(web_as("monitor", "A").text("/"), "unreachable")
        assert "+33612345678" not in monitor and "+33•••••••78" in monitor
    with at("2027-03-31T08:00:00"):
        # The next SMS is delivered: reachable again.
        _sms(db, a1, "2", "delivered")
        html = section(web_as("nurse", "A").text("/"), "unreachable")
        assert ids(html, "participant-id") == [a2.id]
        # She replies STOP.
        set_sms_consent(
            session=db,
            participant=a1,
            consent=False,
            now=now(),
            actor="participant:sms",
            reason="STOP",
            link="",
        )
        db.commit()
        html = section(web_as("nurse", "A").text("/"), "unreachable")
    assert ids(html, "participant-id") == [a1.id, a2.id]
    assert "SMS consent withdrawn on 2027-03-31" in html
    b_html = section(web_as("nurse", "B").text("/"), "unreachable")
    assert "B-001" in b_html and "no SMS consent" in b_html and "A-00" not in b_html


def test_a_failure_to_a_previous_number_does_not_count(world, db, web_as):
    a1 = world.participants["A1"]
    with at(T0):
        _sms(db, a1, "3", "failed", 30006)
        a1.phone_e164 = "+33699999999"
        db.add(a1)
        db.commit()
        html = section(web_as("nurse", "A").text("/"), "unreachable")
    assert a1.id not in ids(html, "participant-id")


# --- decisions due -------------------------------------------------------------------------------


def _neo(db: Any, world: factories.World, code: str, site: str) -> Any:
    study = db.exec(select(factories.Study).where(factories.Study.key == "NCT07239271")).first()
    study = study or factories.make_study(db, "NCT07239271", "nct07239271")
    p = factories.make_participant(
        db,
        world.staff[("coordinator", site)],
        world.sites[site],
        study,
        code,
        cohort="adaptive",
        status=ParticipantStatus.ACTIVE,
        timezone="Asia/Shanghai",
        locale=Locale.ZH,
    )
    db.commit()
    ev = events_of(db, p.id)
    for key, outcome, on in (
        ("ctdna_baseline:1", {"ctdna": "negative"}, date(2027, 1, 3)),
        ("ctdna_c1:1", {"ctdna": "positive", "pam_mutation": False}, date(2027, 1, 24)),
        ("imaging_c2:1", {"recist": "SD"}, date(2027, 2, 14)),
    ):
        schedules.complete_event(
            session=db,
            participant=p,
            event=ev[key],
            completed_on=on,
            outcome=outcome,
            now=now(),
            actor="test",
        )
    db.commit()
    return p


def test_decisions_due_at_my_sites_with_the_recommendation(world, db, web_as):
    with at("2027-02-16T02:00:00"):
        mine = _neo(db, world, "NEO-A", "A")
        _neo(db, world, "NEO-B", "B")
        html = section(web_as("investigator", "A").text("/"), "decisions")
        decision = db.exec(select(Decision).where(Decision.participant_id == mine.id)).one()
        assert ids(html, "decision-id") == [decision.id]
        assert "NEO-A" in html and "NEO-B" not in html
        assert "Regimen decision after cycle 2" in html
        assert "PyroHT (pyrotinib, trastuzumab, docetaxel) × 2" in html
        # Recorded: no longer due.
        schedules.record_decision(
            session=db,
            participant=mine,
            decision=decision,
            regimen="pyroht",
            cycles=None,
            reason=None,
            now=now(),
            actor="test",
            actor_user_id=None,
        )
        db.commit()
        html = section(web_as("investigator", "A").text("/"), "decisions")
    assert count(html) == 0 and "No decision waiting." in html


# --- escalation routes ---------------------------------------------------------------------------


def test_dead_routes_of_my_sites_with_whom_to_contact(world, db, web_as):
    # Nobody in the world has a verified phone: every tier of both sites is dead.
    with at(T0):
        html = section(web_as("nurse", "A").text("/"), "routes")
    assert count(html) > 0 and 'class="badge dead"' in html
    assert "SITE-A" in html and "SITE-B" not in html
    assert "nobody with a verified phone" in html
    assert 'href="mailto:admin.a@example.test"' in html and "admin.b" not in html


def test_no_dead_route_once_phones_are_verified(world, db, web_as, care_team):
    with at(T0):
        html = section(web_as("nurse", "A").text("/"), "routes")
    assert count(html) == 0 and "Every escalation tier reaches someone." in html


def test_nobody_on_call_is_a_warning(world, db, web_as, care_team):
    memberships = db.exec(select(SiteMembership)).all()
    for m in memberships:
        m.is_on_call = False
        db.add(m)
    db.commit()
    with at(T0):
        html = section(web_as("nurse", "A").text("/"), "routes")
    assert count(html) == 1 and 'class="badge dead"' not in html
    assert "nobody on call: every nurse is paged" in html


# --- site filter, limits -------------------------------------------------------------------------


def test_site_filter_for_users_of_several_sites(world, db, web_as, app, care_team):
    both = factories.make_user(
        db, "roaming@example.test", Role.COORDINATOR, [world.sites["A"], world.sites["B"]]
    )
    db.commit()
    with at(T0):
        a = positive_ctdna(db, "A-001")
        b = positive_ctdna(db, "B-001")
        web = Web(app.test_client())
        assert web.login(both.email).status_code == 302
        html = web.text("/")
        assert 'id="site"' in html
        assert ids(section(html, "open-alerts"), "alert-id") == [a, b]
        only_b = web.text(f"/?site={world.sites['B'].id}")
        assert ids(section(only_b, "open-alerts"), "alert-id") == [b]
        assert "A-00" not in section(only_b, "unreachable")
        nurse = web_as("nurse", "A")
        assert 'id="site"' not in nurse.text("/")  # one site: no filter
        assert "site not found" in nurse.text(f"/?site={world.sites['B'].id}", 404)
        assert nurse.get("/?site=abc").status_code == 400
        assert nurse.get("/?site=999999").status_code == 404


def test_at_most_limit_rows_and_how_many_more(world, db, web_as, monkeypatch):
    monkeypatch.setattr(worklist, "LIMIT", 1)
    with at(T0):
        html = section(web_as("nurse", "A").text("/"), "unreachable")
    # Only A2 (no phone) is unreachable: one row, nothing more.
    assert ids(html, "participant-id") == [world.participants["A2"].id]
    assert "more" not in html
    a1 = world.participants["A1"]
    a1.has_sms_consent = False
    db.add(a1)
    db.commit()
    with at(T0):
        html = section(web_as("nurse", "A").text("/"), "unreachable")
    assert len(ids(html, "participant-id")) == 1 and count(html) == 2
    assert "and 1 more" in html


# --- the alerts list and one alert ---------------------------------------------------------------


def test_alerts_list_by_state_scoped_to_my_sites(world, db, web_as, care_team):
    with at(T0):
        a = positive_ctdna(db, "A-001")
        b = positive_ctdna(db, "B-001")
        web = web_as("nurse", "A")
        assert ids(web.text("/alerts"), "alert-id") == [a]
        web.post(f"/alerts/{a}/resolve", data={"note": "done"})
        assert ids(web.text("/alerts"), "alert-id") == []
        assert ids(web.text("/alerts?state=resolved"), "alert-id") == [a]
        assert ids(web.text("/alerts?state=all"), "alert-id") == [a]
        assert ids(web_as("nurse", "B").text("/alerts"), "alert-id") == [b]
        assert web.get("/alerts?state=bogus").status_code == 400
        assert web.get(f"/alerts?site={world.sites['B'].id}").status_code == 404


def test_alert_page_shows_timeline_with_names_in_site_time(world, db, web_as, care_team):
    with at(T0):
        alert_id = positive_ctdna(db, "A-001")
        web = web_as("nurse", "A")
        web.post(f"/alerts/{alert_id}/acknowledge", data={"note": "on it"})
        html = web.text(f"/alerts/{alert_id}")
    assert "When (Europe/Paris)" in html and "2027-03-30 10:00:00 CEST" in html
    assert "SMS queued" in html and "Acknowledged" in html and "“on it”" in html
    nurse_id = world.staff[("nurse", "A")].id
    assert "nurse.a" in html and f"staff:{nurse_id}" not in html  # names, not ids
    # The tier-1 SMS to the on-call nurse was still waiting: the acknowledgement cancelled it.
    messages = html[html.index("<h2>Messages</h2>") :]
    assert re.search(r'<td data-label="To">nurse\.a</td>', messages)
    assert 'class="badge cancelled">Cancelled' in messages
