"""Alert levels: critical pages day and night and escalates, urgent waits for the morning and
escalates, routine is a task in the morning digest (one SMS per person, no reply, no escalation);
which kinds page 24/7 and each kind's level are site settings over the protocol's word; the SMS
say the level in words in the site's language."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlmodel import select

from config.settings import PROTOCOLS_DIR
from notifications.models import OutboxMessage
from notifications.providers import RecordingProvider
from server.alerts import rules
from server.alerts import service as alerts
from server.alerts.models import Alert, AlertKind, AlertState, Level
from server.participants.models import Site
from server.protocols.definition import ProtocolError, parse_protocol
from server.protocols.service import current_protocols
from tests.results.test_results_alerts import care_team, send_staff_sms, staff_sms

__all__ = ["care_team"]

PARIS = ZoneInfo("Europe/Paris")
# Tuesday 30 March 2027: 10:00 in Paris (CEST), 04:00 in New York.
DAY = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)
# Tuesday 23:30 in Paris.
NIGHT = datetime(2027, 3, 30, 21, 30, tzinfo=UTC)
NEXT_MORNING = datetime(2027, 3, 31, 8, 0, tzinfo=PARIS)


def at(moment: datetime):
    return time_machine.travel(moment, tick=False)


def now() -> datetime:
    return datetime.now(UTC)


def open_alert(db, world, kind: AlertKind, key: str, code: str = "A1") -> Alert:
    participant = world.participants[code]
    alert, created = alerts.open_alert(
        session=db,
        kind=kind,
        trigger_key=key,
        participant=participant,
        site_id=participant.site_id,
        summary=f"test {kind.value}",
        now=now(),
    )
    assert created
    db.commit()
    return alert


def set_policy(db, site: Site, policy: dict) -> None:
    site.escalation_policy = policy
    db.add(site)
    db.commit()


# --- the rules, without a database -----------------------------------------------------------


def test_a_kinds_level_is_the_sites_word_then_the_protocols_then_its_default():
    kind = AlertKind.MISSED_WINDOW
    assert rules.level_of(kind, protocol_level=None, policy=None) is Level.ROUTINE
    assert rules.level_of(kind, protocol_level="urgent", policy=None) is Level.URGENT
    site = {"levels": {"missed_window": "critical"}}
    assert rules.level_of(kind, protocol_level="urgent", policy=site) is Level.CRITICAL
    # A site's word on another kind changes nothing here; a level that is not one is ignored.
    assert rules.level_of(kind, protocol_level=None, policy={"levels": {"x": "urgent"}}) is (
        Level.ROUTINE
    )
    assert rules.level_of(kind, protocol_level="soon", policy=None) is Level.ROUTINE


def test_what_pages_at_night_is_a_site_setting_and_routine_never_does():
    critical, urgent, routine = Level.CRITICAL, Level.URGENT, Level.ROUTINE
    # The default: every critical alert and the questionnaire answers.
    assert rules.pages_at_night(AlertKind.CTDNA_POSITIVE, critical, None)
    assert rules.pages_at_night(AlertKind.CRITICAL_ANSWER, urgent, None)
    assert not rules.pages_at_night(AlertKind.CTDNA_POSITIVE_BASELINE, urgent, None)
    site = {"page_24_7": ["ctdna_positive_baseline"]}
    assert rules.pages_at_night(AlertKind.CTDNA_POSITIVE_BASELINE, urgent, site)
    assert not rules.pages_at_night(AlertKind.CTDNA_POSITIVE, critical, site)
    listed = {"page_24_7": ["routine", "missed_window"]}
    assert not rules.pages_at_night(AlertKind.MISSED_WINDOW, routine, listed)


@pytest.mark.parametrize(
    ("level", "kind", "moment", "expected"),
    [
        # Critical: at once, day or night.
        (Level.CRITICAL, AlertKind.CTDNA_POSITIVE, NIGHT, NIGHT),
        # Urgent: at once in the day; at night, when the night ends (08:00 site time).
        (Level.URGENT, AlertKind.REDRAW_NEEDED, DAY, DAY),
        (Level.URGENT, AlertKind.REDRAW_NEEDED, NIGHT, NEXT_MORNING),
        (
            Level.URGENT,
            AlertKind.REDRAW_NEEDED,
            datetime(2027, 3, 31, 5, 59, tzinfo=UTC),
            NEXT_MORNING,
        ),
        # Routine: the next morning digest on a working day, even in the middle of the day.
        (Level.ROUTINE, AlertKind.MISSED_WINDOW, DAY, NEXT_MORNING),
        (Level.ROUTINE, AlertKind.MISSED_WINDOW, NIGHT, NEXT_MORNING),
        (Level.ROUTINE, AlertKind.MISSED_WINDOW, NEXT_MORNING, NEXT_MORNING),
        # Friday evening: Monday morning.
        (
            Level.ROUTINE,
            AlertKind.RESULT_OVERDUE,
            datetime(2027, 4, 2, 19, 0, tzinfo=PARIS),
            datetime(2027, 4, 5, 8, 0, tzinfo=PARIS),
        ),
    ],
)
def test_when_an_alert_sms_may_go_out(level, kind, moment, expected):
    sent = rules.send_moment(kind=kind, level=level, moment=moment, zone=PARIS, policy=None)
    assert sent == expected


def test_the_morning_moves_with_the_clocks():
    # 27 March 2027 is a Saturday; Paris moves to summer time on Sunday 28 March.
    friday_night = datetime(2027, 3, 26, 22, 0, tzinfo=PARIS)
    monday = rules.next_digest(friday_night, PARIS, None)
    assert monday.astimezone(PARIS) == datetime(2027, 3, 29, 8, 0, tzinfo=PARIS)
    assert monday == datetime(2027, 3, 29, 6, 0, tzinfo=UTC)


def test_only_routine_needs_no_reply():
    assert rules.needs_ack(Level.CRITICAL) and rules.needs_ack(Level.URGENT)
    assert not rules.needs_ack(Level.ROUTINE)


# --- the protocol files ----------------------------------------------------------------------


def test_the_protocol_files_grade_their_alerts():
    heroes = current_protocols()["heroes"]
    assert heroes.alerts["ctdna_positive"].level.value == "critical"
    assert heroes.alerts["ctdna_positive_baseline"].level.value == "urgent"
    assert heroes.alerts["missed_window"].level.value == "routine"
    assert "resume" in heroes.alerts["ctdna_positive"].next_step.lower()
    assert heroes.alerts["ctdna_positive"].source.startswith("seed 002")
    nct = current_protocols()["nct07239271"]
    assert nct.alerts["redraw_needed"].level.value == "urgent"


def _with_alerts(block: str) -> str:
    """STOP-HER2's file with its `alerts:` block replaced."""
    text = (PROTOCOLS_DIR / "stop-her2.yaml").read_text(encoding="utf-8")
    start = text.index("\nalerts:\n")
    end = text.index("\n\n", start + 1)
    return text[:start] + "\n" + block + text[end:]


@pytest.mark.parametrize(
    ("block", "problem"),
    [
        ("alerts:\n  progression:\n    level: critical\n", "grade no alert"),
        ("alerts:\n  progression:\n    next_step: Call.\n", "quote its `source`"),
        (
            "alerts:\n  missed_window:\n    next_step: Call.\n    site_defaults: [next_step]\n",
            "nothing raises it here",
        ),
        ("alerts:\n  weather:\n    next_step: Call.\n    site_defaults: [next_step]\n", "weather"),
    ],
)
def test_a_protocols_alert_guidance_is_checked_when_it_loads(block, problem):
    with pytest.raises(ProtocolError, match=re.escape(problem)):
        parse_protocol(_with_alerts(block), file="stop-her2.yaml", key="stop-her2")


# --- through the service and the dispatcher ------------------------------------------------


def test_a_critical_alert_pages_at_night_says_urgent_and_escalates(app, db, world, care_team):
    with at(NIGHT):
        alert = open_alert(db, world, AlertKind.CTDNA_POSITIVE, "t:critical")
        assert alert.level is Level.CRITICAL
        assert alert.next_tier_at == now() + timedelta(minutes=15)
        [sms] = send_staff_sms(app)
    assert sms.to == care_team["nurse"]
    # The site is in France: its staff read French.
    assert sms.body.startswith("URGENT - Stepdown : le participant A-001 a besoin de vous")
    assert f"ACK {alert.ack_code}" in sms.body


def test_an_urgent_alert_waits_for_the_morning_alone_and_escalates_by_day(
    app, db, world, care_team
):
    with at(NIGHT):
        # HEROES grades a positive baseline urgent: the participant has not stopped treatment.
        alert = open_alert(db, world, AlertKind.CTDNA_POSITIVE_BASELINE, "t:urgent")
        assert alert.level is Level.URGENT
        rows = staff_sms(db, alert.id)
        assert {r.not_before_at for r in rows} == {NEXT_MORNING}
        assert all(r.bundle_item is None for r in rows)  # never lost in a bundle
        assert send_staff_sms(app) == []  # nothing at night
        assert alert.next_tier_at == NEXT_MORNING + timedelta(minutes=60)
    provider = RecordingProvider()
    with at(NEXT_MORNING):
        sent = send_staff_sms(app, provider)
    # Tier 1 of the urgent route: the nurses and the coordinators, each their own SMS.
    assert sorted(s.to for s in sent) == sorted([care_team["nurse"], care_team["coordinator"]])
    assert all("action à faire aujourd'hui" in s.body for s in sent)
    assert all(f"ACK {alert.ack_code}" in s.body for s in sent)
    with at(NEXT_MORNING + timedelta(minutes=60)):
        assert alerts.escalate_due(session=db, now=now()) == {"advanced": 1, "exhausted": 0}
        db.commit()
        [investigator] = send_staff_sms(app, provider)
    assert investigator.to == care_team["investigator"]
    assert "niveau 2" in investigator.body


def test_the_site_decides_which_kinds_page_at_night(app, db, world, care_team):
    set_policy(db, world.sites["A"], {"page_24_7": ["critical", "ctdna_positive_baseline"]})
    with at(NIGHT):
        alert = open_alert(db, world, AlertKind.CTDNA_POSITIVE_BASELINE, "t:night")
        assert alert.level is Level.URGENT
        assert len(send_staff_sms(app)) == 2


def test_the_site_may_change_a_kinds_level(db, world, care_team):
    set_policy(db, world.sites["A"], {"levels": {"missed_window": "urgent"}})
    with at(DAY):
        alert = open_alert(db, world, AlertKind.MISSED_WINDOW, "t:site-level")
    assert alert.level is Level.URGENT
    assert alert.policy["levels"] == {"missed_window": "urgent"}


def test_routine_tasks_wait_for_one_morning_sms_per_person_without_codes(app, db, world, care_team):
    with at(DAY):
        tasks = [
            open_alert(db, world, AlertKind.MISSED_WINDOW, "t:r1", "A1"),
            open_alert(db, world, AlertKind.RESULT_OVERDUE, "t:r2", "A2"),
            open_alert(db, world, AlertKind.REDRAW_NEEDED, "t:r3", "A1"),
        ]
        assert [t.level for t in tasks] == [Level.ROUTINE] * 3
        assert all(t.next_tier_at is None for t in tasks)  # nothing escalates
        rows = [r for t in tasks for r in staff_sms(db, t.id)]
        # The coordinator only (the follow-up route), each task at tomorrow's digest.
        assert {r.to_e164 for r in rows} == {care_team["coordinator"]}
        assert {r.not_before_at for r in rows} == {NEXT_MORNING}
        assert all(r.bundle_item["ack"] == "" for r in rows)
        assert send_staff_sms(app) == []
    with at(NEXT_MORNING + timedelta(hours=3)):
        # Still no escalation: the escalation job finds nothing due.
        assert alerts.escalate_due(session=db, now=now()) == {"advanced": 0, "exhausted": 0}
    provider = RecordingProvider()
    with at(NEXT_MORNING):
        [digest] = send_staff_sms(app, provider)
    assert digest.to == care_team["coordinator"]
    assert digest.body.startswith("Stepdown, 3 suivis à faire (pas besoin de répondre)")
    assert "A-001" in digest.body and "A-002" in digest.body
    assert "ACK" not in digest.body
    assert all(t.ack_code not in digest.body for t in tasks)


def test_a_critical_alert_due_with_the_digest_leads_the_bundle_and_says_urgent(
    app, db, world, care_team
):
    # This site pages its nurses and coordinators together for critical alerts.
    tier = {"recipients": "nurses_and_coordinators", "timeout_minutes": 15}
    set_policy(db, world.sites["A"], {"routes": {"clinical": {"tiers": [tier], "repeats": 0}}})
    with at(DAY):
        task = open_alert(db, world, AlertKind.RESULT_OVERDUE, "t:task", "A2")
    with at(NEXT_MORNING):
        critical = open_alert(db, world, AlertKind.CTDNA_POSITIVE, "t:crit", "A1")
        sent = send_staff_sms(app)
    by_phone = {s.to: s.body for s in sent}
    assert by_phone[care_team["nurse"]].startswith("URGENT - Stepdown : le participant A-001")
    # One SMS to the coordinator: the critical alert with its code first, then the task.
    coordinator = by_phone[care_team["coordinator"]]
    assert coordinator.startswith(
        f"URGENT - Stepdown : le participant A-001 (ACK {critical.ack_code}) a besoin de vous"
    )
    assert "Et 1 suivi à faire, pas besoin de répondre : A-002." in coordinator
    assert task.ack_code not in coordinator


def test_a_routine_tasks_code_does_not_acknowledge_by_sms(app, client, db, world, care_team):
    from tests.results.test_sms_ack_recipients import _reply

    with at(DAY):
        task = open_alert(db, world, AlertKind.MISSED_WINDOW, "t:no-ack", "A1")
    with at(NEXT_MORNING):
        send_staff_sms(app)
    with at(NEXT_MORNING + timedelta(minutes=5)):
        _reply(app, client, care_team["coordinator"], f"ACK {task.ack_code}")
    db.expire_all()
    assert db.get(Alert, task.id).state is AlertState.OPEN


def test_a_us_sites_staff_read_english(app, db, world, care_team):
    coordinator_b = world.staff[("coordinator", "B")]
    coordinator_b.phone_e164, coordinator_b.is_phone_verified = "+16175550102", True
    db.add(coordinator_b)
    db.commit()
    with at(DAY):
        alert = open_alert(db, world, AlertKind.RESULT_OVERDUE, "t:en", "B1")
    [row] = db.exec(select(OutboxMessage).where(OutboxMessage.ref == f"alert:{alert.id}")).all()
    assert row.locale == "en"
    assert row.body.startswith("Stepdown task, no reply needed: a lab report expected for B-001")
    # It is 04:00 in New York: the digest at 08:00 there, that same morning.
    assert row.not_before_at == datetime(2027, 3, 30, 8, 0, tzinfo=ZoneInfo("America/New_York"))


# --- the site's settings, through the API ----------------------------------------------------


def put(api, path: str, body):
    return api.client.put(path, json=body, headers=api._headers())


def test_an_admin_sets_what_pages_at_night_and_the_next_critical_alert_waits(
    app, db, world, api_as, care_team
):
    site = world.sites["A"]
    admin = api_as("admin", "A")
    shown = admin.get(f"/api/v1/sites/{site.id}/escalation").get_json()["alert_levels"]
    assert shown["page_24_7"] == ["critical", "critical_answer"]  # the documented default
    assert shown["night"] == {"start": "21:00", "end": "08:00"}
    r = put(
        admin,
        f"/api/v1/sites/{site.id}/alert-levels",
        {"page_24_7": ["critical_answer"], "levels": {"result_overdue": "urgent"}},
    )
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert body["page_24_7"] == ["critical_answer"]
    assert body["levels"] == {"result_overdue": "urgent"}
    assert body["digest"] == {"at": "08:00", "weekdays": [0, 1, 2, 3, 4]}  # left out: default
    db.expire_all()  # the API's request changed the site in its own session
    with at(NIGHT):
        alert = open_alert(db, world, AlertKind.CTDNA_POSITIVE, "t:site-night")
        assert alert.level is Level.CRITICAL
        assert {r.not_before_at for r in staff_sms(db, alert.id)} == {NEXT_MORNING}
        assert send_staff_sms(app) == []
        overdue = open_alert(db, world, AlertKind.RESULT_OVERDUE, "t:site-urgent")
        assert overdue.level is Level.URGENT
    from server.audit import AuditEvent

    [row] = db.exec(select(AuditEvent).where(AuditEvent.action == "site.alert_levels")).all()
    assert row.before["page_24_7"] == ["critical", "critical_answer"]
    assert row.after["page_24_7"] == ["critical_answer"]
    assert row.actor_user_id == world.staff[("admin", "A")].id
    # A setting left out goes back to its default; the site's routes stay.
    routes = {"urgent": {"tiers": [{"recipients": "coordinators", "timeout_minutes": 30}]}}
    site.escalation_policy = {**(site.escalation_policy or {}), "routes": routes}
    db.add(site)
    db.commit()
    default = {"page_24_7": ["critical", "critical_answer"]}
    back = put(admin, f"/api/v1/sites/{site.id}/alert-levels", default).get_json()
    assert back["page_24_7"] == ["critical", "critical_answer"] and back["levels"] == {}
    db.expire_all()
    assert db.get(Site, site.id).escalation_policy == {
        "routes": routes,
        **default,
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"page_24_7": ["routine"]}, "page_24_7"),
        ({"page_24_7": ["weather"]}, "page_24_7"),
        ({"page_24_7": ["critical", "critical"]}, "page_24_7"),
        ({"levels": {"operator": "routine"}}, "levels"),
        ({"levels": {"missed_window": "soon"}}, "levels"),
        ({"night": {"start": "25:00", "end": "08:00"}}, "night"),
        ({"night": {"start": "08:00", "end": "08:00"}}, "night"),
        ({"digest": {"at": "08:00", "weekdays": []}}, "digest"),
        ({"digest": {"at": "08:00", "weekdays": [7]}}, "digest"),
        ({"digest": {"at": "08:00", "weekdays": [1, 1]}}, "digest"),
        ({"page_24_7": "critical"}, "page_24_7"),
        ({"levels": {"missed_window": "urgent"}}, "page_24_7"),
    ],
)
def test_bad_alert_level_settings_are_422_and_change_nothing(db, world, api_as, body, field):
    site = world.sites["A"]
    r = put(api_as("admin", "A"), f"/api/v1/sites/{site.id}/alert-levels", body)
    assert r.status_code == 422, r.get_json()
    assert any(name.split(".")[0] == field for name in r.get_json()["error"]["fields"])
    db.expire_all()
    assert db.get(Site, site.id).escalation_policy is None


def test_only_admins_set_alert_levels(world, api_as):
    site = world.sites["A"]
    body = {"page_24_7": []}
    assert (
        put(api_as("investigator", "A"), f"/api/v1/sites/{site.id}/alert-levels", body).status_code
        == 403
    )
    assert put(api_as("admin", "A"), "/api/v1/sites/999999/alert-levels", body).status_code == 404


def test_a_morning_sms_missed_while_no_dispatcher_ran_waits_for_the_next_morning(
    app, db, world, care_team
):
    """No dispatcher ran on Wednesday (an outage, or `make run` started at night): Wednesday's
    08:00 digest and an urgent alert held for Wednesday morning are found due at 23:30. They wait
    for Thursday's digest and the night's end; a critical alert opened then still goes at once."""
    with at(DAY):
        task = open_alert(db, world, AlertKind.MISSED_WINDOW, "t:late-digest", "A1")
    with at(NIGHT):
        urgent = open_alert(db, world, AlertKind.CTDNA_POSITIVE_BASELINE, "t:late-urgent", "A2")
    assert {r.not_before_at for r in staff_sms(db, task.id)} == {NEXT_MORNING}
    wednesday_night = NIGHT + timedelta(days=1)  # 23:30 in Paris
    thursday = NEXT_MORNING + timedelta(days=1)
    provider = RecordingProvider()
    with at(wednesday_night):
        critical = open_alert(db, world, AlertKind.CTDNA_POSITIVE, "t:night-critical", "A2")
        sent = send_staff_sms(app, provider)
        assert [s.to for s in sent] == [care_team["nurse"]]  # the critical alert only
        assert f"ACK {critical.ack_code}" in sent[0].body
        db.expire_all()
        assert {r.not_before_at for r in staff_sms(db, task.id)} == {thursday}
        assert {r.not_before_at for r in staff_sms(db, urgent.id)} == {thursday}
    with at(thursday):
        morning = send_staff_sms(app, provider)
    bodies = {s.to: s.body for s in morning}
    assert any("suivi" in b for b in bodies.values()), bodies  # the digest
    assert sum("action à faire aujourd'hui" in s.body for s in morning) == 2  # the urgent alert
