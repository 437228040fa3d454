"""The `stepdown` commands a new user runs."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from sqlmodel import Session, col, func, select

from config import settings
from notifications.models import MessageCategory, MessageStatus, OutboxMessage
from server import demo, migrate
from server.alerts.models import Alert, AlertKind, AlertState
from server.app import create_app
from server.audit import AuditEvent
from server.auth.models import Role, StaffUser
from server.cli import DEMO_PASSWORD
from server.db import get_db, make_engine, normalise_url
from server.participants.models import Participant, Site
from server.results.models import LabResult
from server.schedules.models import Decision, EventStatus, ScheduleEvent
from server.surveys.models import SurveyAnswer, SurveyResponse

T = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)  # 10:00 in Paris, 04:00 in Boston


def test_seed_demo_creates_two_sites_every_role_and_logins_that_work(app, db, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    assert DEMO_PASSWORD in result.output
    users = db.exec(select(StaffUser)).all()
    roles_per_site = {(u.role, u.email.split("@")[0].split(".")[-1]) for u in users}
    for site in ("paris", "boston"):
        for role in (Role.INVESTIGATOR, Role.COORDINATOR, Role.NURSE, Role.MONITOR):
            assert (role, site) in roles_per_site
    assert len(db.exec(select(Participant)).all()) >= 4
    # A printed login gets a token and sees only its own site's participants.
    email = "nurse.paris@demo.stepdown.test"
    assert email in result.output
    token = client.post(
        "/api/v1/auth/token", json={"email": email, "password": DEMO_PASSWORD}
    ).get_json()["token"]
    listed = client.get("/api/v1/participants", headers={"Authorization": f"Bearer {token}"})
    sites = {p["site_code"] for p in listed.get_json()["items"]}
    assert sites == {"PARIS-01"}
    # Running it again with --if-empty is harmless.
    again = runner.invoke(args=["seed-demo", "--if-empty"])
    assert again.exit_code == 0
    assert len(db.exec(select(StaffUser)).all()) == len(users)


# --- the demo's story ---------------------------------------------------------------------------


def _seed(app: Any, at: datetime) -> str:
    with time_machine.travel(at, tick=False):
        result = app.test_cli_runner().invoke(args=["seed-demo", "--if-empty"])
    assert result.exit_code == 0, result.output
    return str(result.output)


def _participant(db: Session, code: str) -> Participant:
    return db.exec(select(Participant).where(Participant.study_code == code)).one()


def _event(db: Session, code: str, key: str) -> ScheduleEvent:
    return db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == _participant(db, code).id, ScheduleEvent.key == key
        )
    ).one()


def _api(client: Any, email: str) -> dict[str, str]:
    token = client.post(
        "/api/v1/auth/token", json={"email": email, "password": DEMO_PASSWORD}
    ).get_json()["token"]
    return {"Authorization": f"Bearer {token}"}


def story(db: Session) -> dict[str, Any]:
    """What a user of the demo notices, independent of the day it was seeded."""
    db.expire_all()
    codes = {p.id: p.study_code for p in db.exec(select(Participant))}
    done = db.exec(
        select(ScheduleEvent).where(
            col(ScheduleEvent.status).in_([EventStatus.COMPLETED, EventStatus.MISSED])
        )
    ).all()
    return {
        "alerts": sorted(
            (codes[a.participant_id], a.kind.value, a.state.value)
            for a in db.exec(select(Alert))
            if a.participant_id
        ),
        "decisions": sorted(
            (codes[d.participant_id], d.decision_key, d.status.value, d.recommended_regimen)
            for d in db.exec(select(Decision))
        ),
        "missed": sorted((codes[e.participant_id], e.key) for e in done if e.status == "missed"),
        "late": sorted((codes[e.participant_id], e.key) for e in done if e.is_out_of_window),
        "completed": len([e for e in done if e.status == EventStatus.COMPLETED]),
        "ctdna_calls": sorted(
            (codes[r.participant_id], r.accession_id, r.call.value)
            for r in db.exec(select(LabResult).where(LabResult.kind == "ctdna"))
            if r.call
        ),
        "questionnaires": sorted(
            (codes[r.participant_id], r.status.value) for r in db.exec(select(SurveyResponse))
        ),
        "no_sms": sorted(
            p.study_code for p in db.exec(select(Participant)) if not p.has_sms_consent
        ),
    }


EXPECTED_STORY = {
    "alerts": [
        ("FH-001", "result_overdue", "acknowledged"),
        # Nobody answered: it reached Boston's fail-safe (tests/test_demo_failsafe.py).
        ("FH-002", "ctdna_positive", "open"),
        ("HER-002", "ctdna_positive", "open"),
        ("HER-002", "missed_window", "resolved"),
        # In screening: the entry gate decided (HER-008) or waits for the stop date (HER-009).
        ("HER-008", "entry_gate", "open"),
        ("HER-009", "entry_gate", "open"),
    ],
    "decisions": [("NEO-001", "after_c2", "due", "nab_p_hp")],
    "missed": [("SH2-001", "tumor_markers:1")],
    "late": [("HER-002", "ctdna:1"), ("SH2-001", "research_blood:1"), ("SH2-001", "visit:1")],
    "completed": 41,
    "ctdna_calls": [
        ("FH-001", "SIG-FH-001-01", "negative"),
        ("FH-002", "SIG-FH-002-01", "negative"),
        ("FH-002", "SIG-FH-002-02", "positive"),
        ("HER-001", "SIG-HER-001-01", "negative"),
        ("HER-002", "SIG-HER-002-01", "negative"),
        ("HER-002", "SIG-HER-002-02", "negative"),
        ("HER-002", "SIG-HER-002-03", "negative"),
        ("HER-002", "SIG-HER-002-04", "negative"),
        ("HER-002", "SIG-HER-002-05", "positive"),
        ("HER-003", "SIG-HER-003-01", "negative"),
        ("HER-004", "SIG-HER-004-01", "negative"),
        ("HER-005", "SIG-HER-005-01", "negative"),
        ("HER-006", "SIG-HER-006-01", "negative"),
        ("HER-007", "SIG-HER-007-01", "negative"),
        ("HER-008", "SIG-HER-008-01", "positive"),
        ("HER-009", "SIG-HER-009-01", "negative"),
        ("NEO-001", "SIG-NEO-001-01", "negative"),
        ("NEO-001", "SIG-NEO-001-02", "negative"),
    ],
    "questionnaires": [("HER-001", "submitted")] + [("HER-002", "submitted")] * 3,
    "no_sms": ["SH2-002"],
}


def test_seed_demo_tells_a_story_through_the_services(app, db, client):
    _seed(app, T)
    assert story(db) == EXPECTED_STORY
    # HER-002's fifth ctDNA test, drawn nine days ago, came back positive just now: an open
    # alert at PARIS-01 that the Paris nurse sees and the Boston nurse does not.
    with time_machine.travel(T + timedelta(minutes=1), tick=False):
        paris = client.get(
            "/api/v1/alerts?state=open", headers=_api(client, "nurse.paris@demo.stepdown.test")
        )
        boston = client.get(
            "/api/v1/alerts", headers=_api(client, "nurse.boston@demo.stepdown.test")
        )
    # (and the entry gate's two routine tasks for the coordinator, HER-008 and HER-009)
    assert sorted((a["study_code"], a["kind"]) for a in paris.get_json()) == [
        ("HER-002", "ctdna_positive"),
        ("HER-008", "entry_gate"),
        ("HER-009", "entry_gate"),
    ]
    assert "HER-002" not in {a["study_code"] for a in boston.get_json()}
    alert = db.exec(
        select(Alert).where(
            Alert.kind == AlertKind.CTDNA_POSITIVE,
            Alert.participant_id == _participant(db, "HER-002").id,
        )
    ).one()
    assert db.get(Site, alert.site_id).code == "PARIS-01"
    assert (
        alert.opened_at == T and alert.tier == 1 and alert.next_tier_at == T + timedelta(minutes=15)
    )
    # Its first-tier SMS waits for the dispatcher (make run sends it): nothing faked as sent
    # but FH-002's escalation, which is history (half an hour ago, through the fail-safe).
    nurse = db.exec(
        select(StaffUser).where(StaffUser.email == "nurse.paris@demo.stepdown.test")
    ).one()
    sms = db.exec(select(OutboxMessage).where(OutboxMessage.ref == f"alert:{alert.id}")).all()
    assert [(m.to_e164, m.status) for m in sms] == [(nurse.phone_e164, MessageStatus.PENDING)]
    fh_002 = db.exec(
        select(Alert).where(Alert.participant_id == _participant(db, "FH-002").id)
    ).one()
    assert {
        m.ref
        for m in db.exec(
            select(OutboxMessage).where(col(OutboxMessage.status).in_(["sent", "delivered"]))
        )
    } == {f"alert:{fh_002.id}"}

    # The ctDNA chart of HER-002: four negatives about a quarter apart (the first monitoring
    # draw a day late), then the positive.
    her2 = _participant(db, "HER-002")
    with time_machine.travel(T + timedelta(minutes=1), tick=False):
        headers = _api(client, "coordinator.paris@demo.stepdown.test")
        results = client.get(f"/api/v1/participants/{her2.id}/results", headers=headers).get_json()
        scores = client.get(f"/api/v1/participants/{her2.id}/scores", headers=headers).get_json()
    calls = [(r["call"], r["mtm_per_ml"]) for r in results["ctdna"]]
    assert calls == [("negative", 0.0)] * 4 + [("positive", 0.42)]
    drawn = [datetime.fromisoformat(r["collected_at"]) for r in results["ctdna"]]
    assert [(b.date() - a.date()).days for a, b in itertools.pairwise(drawn)] == [113, 76, 84, 84]
    assert T - drawn[-1] > timedelta(days=8)
    assert [r["recist"] for r in results["imaging"]] == ["CR", "CR", "CR"]
    # Quality of life at 0, 3 and 6 months: global health improving, fatigue easing.
    qlq = scores["instruments"]["eortc_qlq_c30"]
    health = [s["score"] for s in qlq["QL2"]]
    fatigue = [s["score"] for s in qlq["FA"]]
    assert len(health) == 3 and health[0] < health[1] < health[2]
    assert fatigue[0] > fatigue[1] >= fatigue[2]
    answers = db.exec(
        select(func.count())
        .select_from(SurveyAnswer)
        .join(SurveyResponse, col(SurveyResponse.id) == col(SurveyAnswer.response_id))
        .where(SurveyResponse.participant_id == her2.id)
    ).one()
    assert answers == 3 * 30

    # SH2-001: the weeks 4-6 window closed unattended (the scheduler marked it, audited); the
    # visit and research blood came two days late, flagged and with the coordinator's reason.
    missed = _event(db, "SH2-001", "tumor_markers:1")
    marked = db.exec(
        select(AuditEvent).where(
            AuditEvent.entity == "schedule_event",
            AuditEvent.entity_id == str(missed.id),
            AuditEvent.action == "event.missed",
        )
    ).one()
    assert marked.actor == "system:scheduler" and marked.at >= missed.window_close_at
    visit = _event(db, "SH2-001", "visit:1")
    assert visit.is_out_of_window and visit.completed_on > visit.window_close_date
    assert "travelling" in (visit.status_reason or "")

    # FH-001: a draw done a month ago still has no result; the watchdog's alert was
    # acknowledged by the Boston coordinator.
    draw = _event(db, "FH-001", "ctdna:2")
    assert draw.status == EventStatus.COMPLETED
    assert (T.date() - draw.completed_on).days > (draw.result_turnaround_days or 0)
    assert not db.exec(select(LabResult).where(LabResult.event_id == draw.id)).all()
    overdue = db.exec(select(Alert).where(Alert.kind == AlertKind.RESULT_OVERDUE)).one()
    coordinator = db.get(StaffUser, overdue.acknowledged_by_user_id)
    assert overdue.state == AlertState.ACKNOWLEDGED and coordinator.email.startswith(
        "coordinator.boston"
    )

    # SH2-002 replied STOP: no consent, pending participant SMS withdrawn, the care team told.
    sh2 = _participant(db, "SH2-002")
    assert not sh2.has_sms_consent
    notices = db.exec(
        select(OutboxMessage).where(OutboxMessage.category == MessageCategory.STAFF_NOTICE)
    ).all()
    assert notices and all(m.to_e164.startswith("+1617") for m in notices)

    # NEO-001: the regimen decision after cycle 2 is due today, recommended by the protocol.
    neo = _participant(db, "NEO-001")
    decision = db.exec(select(Decision).where(Decision.participant_id == neo.id)).one()
    assert decision.facts == {
        "ctdna_baseline": "negative",
        "ctdna_after_c1": "negative",
        "response": "PR",
        "pam_mutation": "unknown",  # no result reported a PAM status
    }
    assert decision.rule_id == "ctdna_neg_response"
    assert [f["name"] for f in decision.fact_sources or []] == list(decision.facts)
    point = db.get(ScheduleEvent, decision.event_id)
    assert point.status == EventStatus.OPEN and point.target_date == T.date()


def test_the_history_reads_in_order_in_the_audit_trail(app, db):
    _seed(app, T)
    rows = db.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all()
    assert rows and all(r.at <= T for r in rows)
    assert min(r.at for r in rows) <= T - timedelta(days=365)
    # Written in time order: each row is no older than the one before it.
    assert all(a.at <= b.at for a, b in itertools.pairwise(rows))
    # Every participant exists before anything happens to them.
    for p in db.exec(select(Participant)):
        ours = [r for r in rows if r.entity == "participant" and r.entity_id == str(p.id)]
        assert ours[0].action == "participant.create"
        events = db.exec(select(ScheduleEvent).where(ScheduleEvent.participant_id == p.id)).all()
        assert all(p.created_at <= e.completed_at for e in events if e.completed_at)
    # Every result, completion and missed window is in the audit trail.
    actions = [r.action for r in rows]
    events = db.exec(select(ScheduleEvent)).all()
    assert actions.count("result.create") == len(db.exec(select(LabResult)).all())
    assert actions.count("event.complete") == len([e for e in events if e.status == "completed"])
    # SH2-001's visit and both draws were marked missed; two of them were then done late.
    late = [e for e in events if e.is_out_of_window]
    assert actions.count("event.missed") == len([e for e in events if e.status == "missed"]) + len(
        late
    )


TABLES = (
    StaffUser,
    Participant,
    ScheduleEvent,
    LabResult,
    Alert,
    Decision,
    SurveyResponse,
    OutboxMessage,
    AuditEvent,
)


@pytest.mark.parametrize(
    "moment",
    [
        "2027-03-28T00:30:00+01:00",  # just after midnight in Paris, the night clocks go forward
        "2026-11-01T23:45:00-05:00",  # late evening in Boston, the day clocks go back
    ],
)
def test_the_demo_is_the_same_whenever_it_is_seeded_and_is_seeded_once(app, db, moment):
    at = datetime.fromisoformat(moment).astimezone(UTC)
    _seed(app, at)
    assert story(db) == EXPECTED_STORY
    counts = {t.__name__: db.exec(select(func.count()).select_from(t)).one() for t in TABLES}
    # `make run` seeds with --if-empty every time: the second run only prints the logins.
    again = _seed(app, at + timedelta(hours=1))
    assert "already present" in again and DEMO_PASSWORD in again
    db.expire_all()
    assert {
        t.__name__: db.exec(select(func.count()).select_from(t)).one() for t in TABLES
    } == counts
    # Without --if-empty it refuses rather than adding a second demo.
    refused = app.test_cli_runner().invoke(args=["seed-demo"])
    assert refused.exit_code != 0 and "empty" in refused.output


# --- a seed that fails leaves nothing behind ---------------------------------------------------


@pytest.fixture
def empty_app(tmp_path: Any) -> Iterator[Any]:
    """An app on its own freshly migrated database, with real commits (dropped afterwards)."""
    server = os.environ.get("STEPDOWN_TEST_DATABASE_URL")
    name = f"stepdown_demo_{uuid.uuid4().hex[:8]}"
    if server:
        admin = make_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        url = sa.engine.make_url(normalise_url(server)).set(database=name)
        url_s = url.render_as_string(hide_password=False)
    else:
        url_s = f"sqlite:///{tmp_path / 'demo.db'}"
    migrate.upgrade(url_s)
    config = settings.TestingConfig()
    config.DATABASE_URL = url_s
    fresh = create_app(config)
    yield fresh
    get_db(fresh).engine.dispose()
    if server:
        admin = make_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_a_seed_that_fails_half_way_leaves_the_database_empty(empty_app, monkeypatch):
    # The scheduler's status job commits as it goes (it marked SH2-001's events missed before
    # the failure): the seed's one outer transaction must still undo everything.
    original = demo.DemoStory.run

    def run_then_fail(self: demo.DemoStory) -> None:
        original(self)
        raise RuntimeError("disk full")

    monkeypatch.setattr(demo.DemoStory, "run", run_then_fail)
    failed = empty_app.test_cli_runner().invoke(args=["seed-demo", "--if-empty"])
    assert isinstance(failed.exception, RuntimeError)
    # Nothing is left, so the next `seed-demo --if-empty` builds the whole demo.
    with Session(get_db(empty_app).engine) as check:
        for table in TABLES:
            assert check.exec(select(func.count()).select_from(table)).one() == 0, table


def test_create_admin(app, db):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["create-admin", "--email", "Root@Example.test", "--password", "a very long password"]
    )
    assert result.exit_code == 0, result.output
    user = db.exec(select(StaffUser).where(StaffUser.email == "root@example.test")).one()
    assert user.role == Role.ADMIN
    short = runner.invoke(args=["create-admin", "--email", "x@example.test", "--password", "short"])
    assert short.exit_code != 0
    assert "at least 12" in short.output
