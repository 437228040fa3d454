"""Care-team pages benchmark: server time and SQL statements per request of each page at trial
scale (issue 7), through the real Flask app and a client logged in through the real form.

    .venv/bin/python bench/pages.py                    # SQLite, in a temporary file
    .venv/bin/python bench/pages.py --database-url postgresql://postgres@127.0.0.1:5432/test

The PostgreSQL run creates a database `stepdown_pagebench_<random>` on that server and drops it
at the end, even on error. bench/README.md ("pages.py") says what the data are and what every
figure means.

How the data are made: 10,000 HEROES participants (cohort "stop") over three sites, half of them
at the first, with the schedules, event statuses and outbox history of bench/reminders.py (its
bulk loader, imported, not copied); a result for every completed draw and scan whose result
would be in, but a few recent ones left overdue; one STOP-HER2 participant (about 170 events)
enrolled and completed through the real services; about 50 open alerts, a few acknowledged and a
history of resolved ones, opened, acknowledged and resolved through the alerts service.

Each page is requested `--warmup` times, then `--repeat` times timed (the wall time of the test
client's GET, body read: Flask routing, session check, the view, its SQL, the template); the SQL
statements the engine sends are counted on the last request. A page so slow that this would take
more than `--budget` seconds gets fewer timed runs (the table says n=). A page that is missing
(404, the "placeholder.html" stub, any non-200 answer) is reported as such, not measured.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask, template_rendered
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from config.settings import DevelopmentConfig
from server.alerts import service as alert_service
from server.alerts.models import Alert, AlertKind, AlertLog, AlertState
from server.app import create_app
from server.audit import AuditEvent
from server.auth import service as auth_service
from server.auth.models import Role, SiteMembership, StaffUser
from server.db import get_db, make_engine
from server.participants import service as participant_service
from server.participants.entry_gate import attested_passing
from server.participants.models import Locale, Participant, ParticipantStatus
from server.protocols import service as protocols_service
from server.protocols.definition import Protocol, load_protocol
from server.protocols.models import Study
from server.results.models import CtdnaCall, LabResult, Recist, ResultKind, ResultStatus
from server.schedules import service as schedule_service
from server.schedules.models import EventStatus, EventType, ScheduleEvent

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    BulkWriter,
    Row,
    Stopwatch,
    captured_sql,
    exit_cleanly_on_sigterm,
    median,
    percentile,
    row_processor,
    scratch_database,
    timings_ms,
)
from bench.reminders import (  # noqa: E402
    EVENT_TABLE,
    OUTBOX_TABLE,
    PARTICIPANT_TABLE,
    TZ,
    Loader,
    Scenario,
    load_average,
)
from bench.reminders import PROTOCOL_FILE as HEROES_FILE  # noqa: E402

STOP_HER2_FILE = ROOT / "config" / "protocols" / "stop-her2.yaml"
PASSWORD = "page-bench-password-not-secret"
# Three sites; the loader gives participant n the site at n % 4 of this list: the first site
# has half the participants (the nurse measured works there), the others a quarter each.
SITE_CODES = ("FR-PARIS", "FR-LYON", "FR-LILLE")
SITE_SLOTS = (0, 0, 1, 2)
STOP_HER2_ANCHOR_AGO = timedelta(days=2 * 365)  # ~40 of its ~170 events are past
AWAITED_DAYS = 120  # results_overdue looks this far back
OVERDUE_ONE_IN = 200  # recent completed draws/scans left without a result (overdue)
POSITIVE_ALERTS = 6
ACKNOWLEDGED_ALERTS = 10
RESOLVED_ALERTS = 150
SLOW_MS = 500.0  # a page slower than this (p95) is a finding
REPEATED_STATEMENT = 5  # one statement sent this often in one request smells of N+1
MIN_RUNS = 3  # timed runs of a slow page (unless one request exceeds the budget)
RESULT_TABLE: sa.Table = LabResult.__table__  # type: ignore[attr-defined]

# Query-string names of the participants list (api/participant_pages.py).
PARTICIPANTS_ADHERENCE_FILTER = "adherence_below"
PARTICIPANTS_SEARCH = "search"


def log(message: str) -> None:
    print(message, flush=True)


# --- building the data --------------------------------------------------------------------------


@dataclass
class World:
    """What the pages are requested about."""

    site_ids: list[int]
    heroes_study_id: int
    staff: dict[tuple[str, str], int] = field(default_factory=dict)  # (role, site code) -> id
    stop_her2_participant_id: int = 0
    heroes_participant_id: int = 0
    heroes_participant_code: str = ""
    counts: dict[str, int] = field(default_factory=dict)


def create_reference_rows(session: Session, now: datetime) -> tuple[World, Protocol]:
    """Both studies with their recorded protocol versions, the sites and the staff (with
    verified phones, so no escalation route is dead), through the real services."""
    heroes = load_protocol(HEROES_FILE)
    stop_her2 = load_protocol(STOP_HER2_FILE)
    studies = []
    for protocol in (heroes, stop_her2):
        study = Study(
            key=protocol.study, title=protocol.title, protocol_key=protocol.key, created_at=now
        )
        session.add(study)
        protocols_service.record_version(session=session, protocol=protocol, now=now)
        studies.append(study)
    sites = [
        auth_service.create_site(
            session=session,
            actor=None,
            code=code,
            name=f"Centre {code.split('-')[1].title()}",
            country="FR",
            timezone=TZ,
            failsafe_role="investigator",  # required before enrolment (issue 16)
            now=now,
        )
        for code in SITE_CODES
    ]
    session.flush()
    site_ids = [s.id for s in sites if s.id is not None]
    assert studies[0].id is not None and len(site_ids) == len(sites)
    world = World(site_ids=site_ids, heroes_study_id=studies[0].id)
    phone = 33_620_000_000
    for site in sites:
        for role in (Role.NURSE, Role.NURSE, Role.COORDINATOR, Role.INVESTIGATOR):
            phone += 1
            user = auth_service.create_user(
                session=session,
                actor=None,
                email=f"{role.value}{phone % 100}.{site.code.lower()}@bench.test",
                full_name=f"{role.value.title()} {phone % 100}",
                password=PASSWORD,
                role=role,
                site_ids=[site.id],  # type: ignore[list-item]
                phone_e164=f"+{phone}",
                is_phone_verified=True,
                now=now,
            )
            world.staff.setdefault((role.value, site.code), user.id)  # type: ignore[arg-type]
    all_sites = [s.id for s in sites]
    for role in (Role.ADMIN, Role.MONITOR):
        phone += 1
        user = auth_service.create_user(
            session=session,
            actor=None,
            email=f"{role.value}@bench.test",
            full_name=role.value.title(),
            password=PASSWORD,
            role=role,
            site_ids=all_sites,  # type: ignore[arg-type]
            phone_e164=f"+{phone}" if role == Role.ADMIN else None,
            is_phone_verified=role == Role.ADMIN,
            now=now,
        )
        world.staff[(role.value, "all")] = user.id  # type: ignore[assignment]
    # The first nurse of each site is on call (tier 1 of most alerts).
    for site in sites:
        nurse_id = world.staff[("nurse", site.code)]
        membership = session.exec(
            select(SiteMembership).where(
                SiteMembership.user_id == nurse_id, SiteMembership.site_id == site.id
            )
        ).one()
        membership.is_on_call = True
        session.add(membership)
    session.flush()
    return world, heroes


def enroll_stop_her2(session: Session, world: World, now: datetime) -> tuple[int, int]:
    """One STOP-HER2 participant enrolled two years ago at the first site, every event whose
    window has closed completed on its target day (imaging with RECIST SD), through the
    services (so its audit trail is real). Returns (participant id, events completed)."""
    coordinator = session.get(StaffUser, world.staff[("coordinator", SITE_CODES[0])])
    assert coordinator is not None
    anchor = (now - STOP_HER2_ANCHOR_AGO).date()
    enrolled_at = now - STOP_HER2_ANCHOR_AGO - timedelta(days=28)
    participant = participant_service.enroll(
        session=session,
        user=coordinator,
        study="STOP-HER2",
        site_id=world.site_ids[0],
        study_code="S-0001",
        timezone=TZ,
        now=enrolled_at,
        cohort="stop",
        anchor_date=anchor,
        status=ParticipantStatus.OFF_TREATMENT_MONITORING,
        locale=Locale.FR,
        phone="+33699000001",
        has_sms_consent=True,
        # The entry gate was passed before (its facts attested, issue 17).
        eligibility=attested_passing(
            protocols_service.find_protocol("stop-her2"), enrolled_at.date()
        ),
    )
    events = session.exec(
        select(ScheduleEvent)
        .where(ScheduleEvent.participant_id == participant.id)
        .order_by(col(ScheduleEvent.target_at), col(ScheduleEvent.id))
    ).all()
    done = 0
    for n, event in enumerate(events):
        if event.window_close_at >= now or n % 13 == 5:  # a few left to be missed
            continue
        schedule_service.complete_event(
            session=session,
            participant=participant,
            event=event,
            completed_on=event.target_date,
            now=event.target_at + timedelta(hours=6),
            actor=f"staff:{coordinator.id}",
            actor_user_id=coordinator.id,
            outcome={"recist": "SD"} if event.event_type == EventType.IMAGING else None,
        )
        done += 1
    session.flush()
    return participant.id, done  # type: ignore[return-value]


def load_results(engine: Engine, writer: BulkWriter, now: datetime) -> dict[str, int]:
    """A result for every completed draw and scan whose result would be in by now (reported
    5-12 days after the draw), except one in OVERDUE_ONE_IN of the last 120 days' (overdue)."""
    process = row_processor(engine, RESULT_TABLE)
    e, p, s = EVENT_TABLE, PARTICIPANT_TABLE, Study.__table__  # type: ignore[attr-defined]
    query = (
        sa.select(
            e.c.id,
            e.c.participant_id,
            e.c.expects_result,
            e.c.completed_on,
            e.c.target_at,
            p.c.site_id,
            p.c.study_code,
            s.c.key,
        )
        .join(p, p.c.id == e.c.participant_id)
        .join(s, s.c.id == p.c.study_id)
        .where(
            e.c.status == EventStatus.COMPLETED.value,
            e.c.expects_result.is_not(None),
            e.c.completed_on.is_not(None),
        )
        .order_by(e.c.id)
    )
    with engine.connect() as conn:
        events = conn.execute(query).all()
    awaited_since = (now - timedelta(days=AWAITED_DAYS)).date()
    rows: list[Row] = []
    left_overdue = awaiting = 0
    for eid, pid, expects, done_on, target_at, site_id, code, study_key in events:
        if isinstance(target_at, datetime) and target_at.tzinfo is None:
            target_at = target_at.replace(tzinfo=UTC)  # SQLite reads naive UTC
        reported_at = datetime.combine(
            done_on + timedelta(days=5 + eid % 8), clock_time(14, 0), tzinfo=UTC
        )
        if reported_at > now:
            awaiting += 1
            continue
        if done_on >= awaited_since and eid % OVERDUE_ONE_IN == 0:
            left_overdue += 1
            continue
        accession = f"B{eid:09d}"
        values: dict[str, Any] = {
            "id": len(rows) + 1,
            "source": "natera",
            "accession_id": accession,
            "study_key": study_key,
            "study_code": code,
            "participant_id": pid,
            "site_id": site_id,
            "event_id": eid,
            "status": ResultStatus.ACCEPTED,
            "collected_at": target_at,
            "reported_at": reported_at,
            "received_at": reported_at,
        }
        if expects == "ctdna":
            payload = {"accession_id": accession, "call": "negative", "mtm_per_ml": 0.0}
            values |= {
                "kind": ResultKind.CTDNA,
                "assay": "Signatera",
                "call": CtdnaCall.NEGATIVE,
                "mtm_per_ml": 0.0,
            }
        elif expects == "imaging":
            payload = {"accession_id": accession, "modality": "ct", "recist": "SD"}
            values |= {
                "kind": ResultKind.IMAGING,
                "source": "radiology",
                "modality": "ct",
                "recist": Recist.SD,
                "performed_on": done_on,
            }
        else:
            payload = {"accession_id": accession, "marker": "CA 15-3", "value": 18.0}
            values |= {
                "kind": ResultKind.TUMOR_MARKER,
                "source": "lab",
                "marker": "CA 15-3",
                "value": 18.0 + eid % 9,
                "unit": "U/mL",
            }
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        values |= {"payload": payload, "payload_sha256": hashlib.sha256(text.encode()).hexdigest()}
        rows.append(process(values))
    written = writer.write(RESULT_TABLE, rows)
    writer.after_explicit_ids([RESULT_TABLE])
    return {"results": written, "awaiting": awaiting, "overdue_left": left_overdue}


def open_alerts(session: Session, world: World, now: datetime, open_count: int) -> dict[str, int]:
    """Alerts as the jobs and the results service open them (alerts.open_alert): positive ctDNA
    results (the latest negative results of a few participants made positive), missed ctDNA
    windows of the last 30 days, results overdue; a few acknowledged; and a history of resolved
    missed-window alerts from the months before."""
    nurses = {
        site_id: session.get(StaffUser, world.staff[("nurse", code)])
        for site_id, code in zip(world.site_ids, SITE_CODES, strict=True)
    }
    followed = [ParticipantStatus.ACTIVE, ParticipantStatus.OFF_TREATMENT_MONITORING]

    def missed_ctdna(since: datetime, until: datetime, limit: int) -> list[Any]:
        return list(
            session.exec(
                select(ScheduleEvent, Participant)
                .join(Participant, col(Participant.id) == col(ScheduleEvent.participant_id))
                .where(
                    ScheduleEvent.status == EventStatus.MISSED,
                    ScheduleEvent.event_type == EventType.CTDNA_DRAW,
                    col(ScheduleEvent.window_close_at) > since,
                    col(ScheduleEvent.window_close_at) <= until,
                    col(Participant.status).in_(followed),
                )
                .order_by(col(ScheduleEvent.window_close_at).desc(), col(ScheduleEvent.id))
                .limit(limit)
            ).all()
        )

    opened: list[Alert] = []
    # Positive ctDNA: the newest ctDNA results of some participants turn positive.
    latest = session.exec(
        select(LabResult)
        .where(LabResult.kind == ResultKind.CTDNA, col(LabResult.reported_at) < now)
        .order_by(col(LabResult.reported_at).desc())
        .limit(POSITIVE_ALERTS * 7)
    ).all()
    for n, result in enumerate(latest[::7][:POSITIVE_ALERTS]):
        result.call = CtdnaCall.POSITIVE
        result.mtm_per_ml = 0.42 + n / 10
        session.add(result)
        participant = session.get(Participant, result.participant_id)
        alert, _ = alert_service.open_alert(
            session=session,
            kind=AlertKind.CTDNA_POSITIVE,
            trigger_key=f"ctdna_positive:{result.id}",
            participant=participant,
            site_id=result.site_id,
            summary=f"ctDNA positive ({result.mtm_per_ml:.2f} MTM/mL)",
            result_id=result.id,
            now=now - timedelta(hours=2 + 5 * n),
        )
        opened.append(alert)
    # open_count stay open; ACKNOWLEDGED_ALERTS more are acknowledged below.
    wanted = open_count + ACKNOWLEDGED_ALERTS - len(opened)
    missed_now = missed_ctdna(now - timedelta(days=30), now, max(0, wanted))
    for n, (event, participant) in enumerate(missed_now):
        alert, _ = alert_service.open_alert(
            session=session,
            kind=AlertKind.MISSED_WINDOW,
            trigger_key=f"missed:{event.id}",
            participant=participant,
            site_id=participant.site_id,
            summary=f"{event.key} window closed without a draw",
            event_id=event.id,
            now=max(event.window_close_at, now - timedelta(hours=1 + n)),
        )
        opened.append(alert)
    for n, alert in enumerate(opened[-ACKNOWLEDGED_ALERTS:]):
        alert_service.acknowledge(
            session=session,
            alert=alert,
            user=nurses[alert.site_id],  # type: ignore[index,arg-type]
            channel="sms" if n % 2 else "web",
            now=alert.opened_at + timedelta(minutes=7),
        )
    history = missed_ctdna(now - timedelta(days=150), now - timedelta(days=30), RESOLVED_ALERTS)
    for n, (event, participant) in enumerate(history):
        at = event.window_close_at + timedelta(hours=1)
        alert, _ = alert_service.open_alert(
            session=session,
            kind=AlertKind.MISSED_WINDOW,
            trigger_key=f"missed:{event.id}",
            participant=participant,
            site_id=participant.site_id,
            summary=f"{event.key} window closed without a draw",
            event_id=event.id,
            now=at,
        )
        alert_service.resolve(
            session=session,
            alert=alert,
            user=nurses[participant.site_id],  # type: ignore[arg-type]
            note="Participant called; draw rescheduled with the lab." if n % 3 else "Noted.",
            now=at + timedelta(hours=3 + n % 20),
        )
    session.flush()
    return {
        "alerts_open": sum(1 for a in opened if a.state == AlertState.OPEN),
        "alerts_acknowledged": sum(1 for a in opened if a.state == AlertState.ACKNOWLEDGED),
        "alerts_resolved": len(history),
    }


def pick_heroes_participant(session: Session, world: World) -> tuple[int, str]:
    """A HEROES participant of the first site with a long history and an open alert."""
    found = session.exec(
        select(Participant.id, Participant.study_code)
        .join(Alert, col(Alert.participant_id) == col(Participant.id))
        .where(
            Participant.study_id == world.heroes_study_id,
            Participant.site_id == world.site_ids[0],
            Alert.state == AlertState.OPEN,
        )
        .order_by(col(Participant.anchor_date), col(Participant.id))
    ).first()
    if found is None:
        found = session.exec(
            select(Participant.id, Participant.study_code)
            .where(Participant.site_id == world.site_ids[0])
            .order_by(col(Participant.anchor_date), col(Participant.id))
        ).first()
    assert found is not None and found[0] is not None
    return found[0], found[1]


def count_rows(engine: Engine, world: World, now: datetime) -> dict[str, int]:
    since = now - timedelta(days=30)
    with Session(engine) as session:

        def count(q: Any) -> int:
            return int(session.exec(q).one())

        f = sa.func
        return {
            "participants": count(select(f.count()).select_from(Participant)),
            "participants_first_site": count(
                select(f.count())
                .select_from(Participant)
                .where(Participant.site_id == world.site_ids[0])
            ),
            "events": count(select(f.count()).select_from(ScheduleEvent)),
            "missed_last_30_days": count(
                select(f.count())
                .select_from(ScheduleEvent)
                .where(
                    ScheduleEvent.status == EventStatus.MISSED,
                    col(ScheduleEvent.window_close_at) > since,
                )
            ),
            "lab_results": count(select(f.count()).select_from(LabResult)),
            "outbox": count(select(f.count()).select_from(OUTBOX_TABLE)),
            "alerts": count(select(f.count()).select_from(Alert)),
            "alert_log": count(select(f.count()).select_from(AlertLog)),
            "audit": count(select(f.count()).select_from(AuditEvent)),
        }


def build(url: str, now: datetime, participants: int, open_count: int) -> World:
    """Every row the pages read; phases timed."""
    engine = make_engine(url)
    watch = Stopwatch()
    with Session(engine, expire_on_commit=False) as session:
        world, heroes = create_reference_rows(session, now)
        session.commit()
    log(f"reference rows (2 studies, 3 sites, 14 staff) in {watch.seconds():.1f} s")

    watch = Stopwatch()
    writer = BulkWriter(url)
    try:
        scenario = Scenario(engine, heroes, now, world.heroes_study_id)
        loader = Loader(scenario, writer, [world.site_ids[i] for i in SITE_SLOTS])
        written = loader.grow_to(participants)
        log(
            f"bulk load: {written['participant']:,} HEROES participants, "
            f"{written['schedule_event']:,} events, {written['outbox_message']:,} outbox rows "
            f"in {watch.seconds():.1f} s"
        )
        watch = Stopwatch()
        with Session(engine, expire_on_commit=False) as session:
            world.stop_her2_participant_id, completed = enroll_stop_her2(session, world, now)
            session.commit()
        log(
            f"STOP-HER2 participant {world.stop_her2_participant_id} enrolled, {completed} "
            f"events completed through the services in {watch.seconds():.1f} s"
        )
        watch = Stopwatch()
        results = load_results(engine, writer, now)
        log(
            f"lab results: {results['results']:,} written, {results['awaiting']:,} not in yet, "
            f"{results['overdue_left']:,} left overdue, in {watch.seconds():.1f} s"
        )
        watch = Stopwatch()
        with Session(engine, expire_on_commit=False) as session:
            alerts = open_alerts(session, world, now, open_count)
            session.commit()
            world.heroes_participant_id, world.heroes_participant_code = pick_heroes_participant(
                session, world
            )
        log(
            f"alerts through the service: {alerts['alerts_open']} open, "
            f"{alerts['alerts_acknowledged']} acknowledged, {alerts['alerts_resolved']} "
            f"resolved, in {watch.seconds():.1f} s"
        )
        writer.analyze(
            [
                PARTICIPANT_TABLE,
                EVENT_TABLE,
                OUTBOX_TABLE,
                RESULT_TABLE,
                Alert.__table__,  # type: ignore[attr-defined]
                AlertLog.__table__,  # type: ignore[attr-defined]
                AuditEvent.__table__,  # type: ignore[attr-defined]
            ]
        )
    finally:
        writer.close()
    world.counts = count_rows(engine, world, now)
    engine.dispose()
    return world


# --- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    key: str  # RESULT group: today, alerts, participants, participants_filtered, ...
    label: str
    path: str
    user: tuple[str, str]  # (role, site code or "all")


@dataclass
class Figures:
    page: Page
    status: int
    missing: str | None = None  # why the page could not be measured
    times_ms: list[float] = field(default_factory=list)
    statements: list[tuple[str, Any]] = field(default_factory=list)
    body_bytes: int = 0
    table_rows: int = 0
    slowest: list[tuple[float, str]] = field(default_factory=list)  # (ms, SQL) if slow

    @property
    def queries(self) -> int:
        """Statements sent to the database (transaction control excluded)."""
        return len(self.sql_only)

    @property
    def sql_only(self) -> list[str]:
        return [
            s
            for s, _ in self.statements
            if not re.match(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", s, re.I)
        ]

    def repeated(self) -> list[tuple[str, int]]:
        """Statements sent more than once in the request, most repeated first."""
        return [(s, n) for s, n in Counter(self.sql_only).most_common() if n > 1]

    @property
    def p50(self) -> float:
        return median(self.times_ms)

    @property
    def p95(self) -> float:
        return percentile(self.times_ms, 95)


class Client:
    """One logged-in user's test client (its own cookie jar), as tests/conftest.py's Web."""

    CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

    def __init__(self, app: Flask, email: str) -> None:
        self.client: FlaskClient = app.test_client()
        page = self.client.get("/login")
        found = self.CSRF.search(page.get_data(as_text=True))
        if found is None:
            raise SystemExit("the login form has no CSRF token")
        resp = self.client.post(
            "/login", data={"email": email, "password": PASSWORD, "csrf_token": found.group(1)}
        )
        if resp.status_code != 302:
            raise SystemExit(f"login as {email} failed: {resp.status_code}")


@dataclass
class TemplateSpy:
    """The templates rendered during a request (to tell a placeholder stub from a page)."""

    names: list[str] = field(default_factory=list)

    def __call__(self, sender: Any, template: Any, context: Any, **extra: Any) -> None:
        self.names.append(str(template.name))


def measure_page(
    client: FlaskClient,
    engine: Engine,
    spy: TemplateSpy,
    page: Page,
    repeat: int,
    warmup: int,
    budget_s: float,
) -> Figures:
    """Time a page: `warmup` + `repeat` requests, fewer when the first request (which also
    counts the SQL statements) shows they would take more than `budget_s` seconds in all; a
    page slower than the whole budget is timed by that first request alone."""
    spy.names.clear()
    start = time.perf_counter()
    try:
        with captured_sql(engine) as seen:
            first = client.get(page.path)
            body = first.get_data()
    except Exception as exc:  # a page under construction may crash: report it, go on
        return Figures(page, 500, missing=f"raised {type(exc).__name__}: {exc}")
    first_s = time.perf_counter() - start
    if first.status_code != 200:
        return Figures(page, first.status_code, missing=f"answered {first.status_code}")
    if "placeholder.html" in spy.names:
        return Figures(page, 200, missing="placeholder stub")
    figures = Figures(
        page,
        200,
        statements=list(seen),
        body_bytes=len(body),
        table_rows=body.count(b"<tr") if b"<tr" in body else body.count(b"\n") - 1,
    )
    if first_s > budget_s:
        log(f"  ({page.label}: one request took {first_s:.1f} s; timed once)")
        figures.times_ms = [first_s * 1000.0]
        return figures
    if first_s * (repeat + warmup) > budget_s:
        # The first request warmed up imports and caches already.
        warmup = 0
        repeat = max(MIN_RUNS, min(repeat, int(budget_s / first_s)))
        log(f"  ({page.label}: the first request took {first_s:.1f} s; {repeat} timed runs)")

    def once() -> float:
        # Every run captures its SQL (a list append per statement): the last run's is kept,
        # so the count is a warm request's, not the first one's (which fills caches).
        with captured_sql(engine) as seen:
            start = time.perf_counter()
            resp = client.get(page.path)
            resp.get_data()
            elapsed = time.perf_counter() - start
        if resp.status_code != 200:
            raise RuntimeError(f"{page.path} answered {resp.status_code} during the runs")
        figures.statements = list(seen)
        return elapsed

    figures.times_ms = timings_ms(once, repeat=repeat, warmup=warmup)
    return figures


def slowest_statements(engine: Engine, f: Figures, top: int = 3) -> list[tuple[float, str]]:
    """The page's SELECTs run again one by one (same SQL, same parameters): the slowest, in
    milliseconds (to say why a page is slow)."""
    timed: dict[str, tuple[float, str]] = {}
    for statement, params in f.statements:
        if not re.match(r"\s*(SELECT|WITH)\b", statement, re.I) or statement in timed:
            continue
        with engine.connect() as conn:
            start = time.perf_counter()
            conn.exec_driver_sql(statement, params).all()
            timed[statement] = ((time.perf_counter() - start) * 1000.0, statement)
            conn.rollback()
    return sorted(timed.values(), reverse=True)[:top]


def pages(world: World, now: datetime) -> list[Page]:
    nurse = ("nurse", SITE_CODES[0])
    monitor = ("monitor", "all")
    month = now.strftime("%Y-%m")
    drill = f"/adherence/participants?measure=missed&event_type=ctdna_draw&month={month}"
    return [
        Page("today", "/ (Today)", "/", nurse),
        Page("today_admin", "/ (Today, admin of 3 sites)", "/", ("admin", "all")),
        Page("coming_up_csv", "/coming-up.csv (Today, every row)", "/coming-up.csv", nurse),
        Page("alerts", "/alerts", "/alerts", nurse),
        Page("participants", "/participants (first page)", "/participants", nurse),
        Page(
            "participants_filtered",
            f"/participants?{PARTICIPANTS_ADHERENCE_FILTER}=80",
            f"/participants?{PARTICIPANTS_ADHERENCE_FILTER}=80",
            nurse,
        ),
        Page(
            "participants_filtered",
            f"/participants?{PARTICIPANTS_SEARCH}=<code>",
            f"/participants?{PARTICIPANTS_SEARCH}={world.heroes_participant_code}",
            nurse,
        ),
        Page("participants_later", "/participants?page=60", "/participants?page=60", nurse),
        Page(
            "participants",
            "/participants (monitor, 3 sites)",
            "/participants",
            monitor,
        ),
        Page(
            "participant_page",
            "/participants/<id> STOP-HER2",
            f"/participants/{world.stop_her2_participant_id}",
            nurse,
        ),
        Page(
            "participant_page",
            "/participants/<id> HEROES",
            f"/participants/{world.heroes_participant_id}",
            nurse,
        ),
        Page("adherence", "/adherence", "/adherence", nurse),
        Page("adherence", "/adherence (monitor, 3 sites)", "/adherence", monitor),
        Page("adherence", "/adherence/participants (drill)", drill, nurse),
        Page("adherence", "/adherence.csv", "/adherence.csv", nurse),
        Page(
            "adherence",
            "/adherence.csv?view=participants",
            "/adherence.csv?view=participants&measure=missed",
            nurse,
        ),
    ]


def email_of(engine: Engine, user_id: int) -> str:
    with Session(engine) as session:
        user = session.get(StaffUser, user_id)
        assert user is not None
        return user.email


class BenchConfig(DevelopmentConfig):
    """Development settings without debug mode (no template reloading on every render)."""

    DEBUG = False


def measure_all(url: str, world: World, now: datetime, args: argparse.Namespace) -> list[Figures]:
    config = BenchConfig()
    config.DATABASE_URL = url
    app = create_app(config)
    engine = get_db(app).engine
    spy = TemplateSpy()
    template_rendered.connect(spy, app)
    clients: dict[tuple[str, str], Client] = {}
    out = []
    for page in pages(world, now):
        if args.only and not re.search(args.only, page.label):
            continue
        if page.user not in clients:
            clients[page.user] = Client(app, email_of(engine, world.staff[page.user]))
        figures = measure_page(
            clients[page.user].client, engine, spy, page, args.repeat, args.warmup, args.budget
        )
        out.append(figures)
        log(summary_line(figures))
        if not figures.missing and SLOW_MS < figures.p95 < args.budget * 1000.0:
            figures.slowest = slowest_statements(engine, figures)
    engine.dispose()
    return out


# --- reporting ----------------------------------------------------------------------------------


def summary_line(f: Figures) -> str:
    who = "/".join(f.page.user)
    if f.missing:
        return f"  {f.page.label:<40} {who:<16} MISSING ({f.missing})"
    worst = f.repeated()[0][1] if f.repeated() else 1
    return (
        f"  {f.page.label:<40} {who:<16} p50 {f.p50:8.1f}  p95 {f.p95:8.1f}  "
        f"max {max(f.times_ms):8.1f} ms  {f.queries:4d} queries (most repeated ×{worst})  "
        f"{f.table_rows:5d} rows  {f.body_bytes / 1024:7.1f} KB  n={len(f.times_ms)}"
    )


def shorten(statement: str, keep: int = 400) -> str:
    """One line; a long column list elided from the middle, the FROM/WHERE end kept."""
    one_line = " ".join(statement.split())
    if len(one_line) <= keep:
        return one_line
    return one_line[: keep // 4] + " … " + one_line[-(keep - keep // 4) :]


def findings(figures: Sequence[Figures]) -> Iterator[str]:
    for f in figures:
        if f.missing:
            continue
        if f.p95 > SLOW_MS:
            yield f"{f.page.label}: p95 {f.p95:.0f} ms is over {SLOW_MS:.0f} ms"
            for ms, statement in f.slowest:
                yield f"    its statement taking {ms:.0f} ms alone: {shorten(statement, 900)}"
        for statement, n in f.repeated():
            if n >= REPEATED_STATEMENT:
                yield (
                    f"{f.page.label}: one statement sent {n} times in one request "
                    f"(N+1?): {shorten(statement)}"
                )


def result_value(figures: Sequence[Figures], key: str, pick: Callable[[Figures], float]) -> str:
    group = [f for f in figures if f.page.key == key]
    measured = [f for f in group if not f.missing]
    if not group:
        return "skipped"
    if len(measured) < len(group):
        return "missing"
    return f"{max(pick(f) for f in measured):.1f}"


def dump_sql(directory: Path, figures: Sequence[Figures]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for n, f in enumerate(figures):
        if f.missing:
            continue
        name = re.sub(r"[^A-Za-z0-9]+", "_", f.page.label).strip("_")
        with open(directory / f"{n:02d}_{name}.sql", "w") as out:
            for statement, params in f.statements:
                out.write(f"{statement.strip()}\n-- {params!r}\n\n")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL; a scratch database is created there and dropped after "
        "(default: SQLite in a temporary file)",
    )
    parser.add_argument("--participants", type=int, default=10_000, help="HEROES participants")
    parser.add_argument("--alerts", type=int, default=50, help="open alerts")
    parser.add_argument("--repeat", type=int, default=20, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=3, help="untimed requests first")
    parser.add_argument(
        "--budget",
        type=float,
        default=60.0,
        help="seconds per page: a slower page gets fewer timed runs (at least 3; one if a "
        "single request takes longer)",
    )
    parser.add_argument("--only", help="measure only the pages whose label matches this regex")
    parser.add_argument("--dump-sql", type=Path, help="write each page's SQL to files here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    exit_cleanly_on_sigterm()
    total = Stopwatch()
    now = datetime.now(UTC).replace(microsecond=0)
    with scratch_database(args.database_url, prefix="stepdown_pagebench") as url:
        dialect = make_engine(url).dialect.name
        log(
            f"database: {dialect}; now = {now.isoformat()} "
            f"({now.astimezone(ZoneInfo(TZ)):%H:%M} {TZ}); {load_average()}"
        )
        watch = Stopwatch()
        world = build(url, now, args.participants, args.alerts)
        c = world.counts
        log(
            f"data built in {watch.seconds():.0f} s: {c['participants']:,} participants "
            f"({c['participants_first_site']:,} at {SITE_CODES[0]}), {c['events']:,} events "
            f"({c['missed_last_30_days']:,} missed in the last 30 days), {c['lab_results']:,} "
            f"lab results, {c['outbox']:,} outbox rows, {c['alerts']:,} alerts "
            f"({c['alert_log']:,} log rows), {c['audit']:,} audit rows"
        )
        log(
            f"STOP-HER2 participant id {world.stop_her2_participant_id}; HEROES participant "
            f"id {world.heroes_participant_id} ({world.heroes_participant_code})"
        )
        log(
            f"pages ({args.repeat} timed requests each after {args.warmup} warm-ups; "
            "SQL statements counted on the last one):"
        )
        figures = measure_all(url, world, now, args)
    if args.dump_sql:
        dump_sql(args.dump_sql, figures)
    found = list(findings(figures))
    log("findings:" if found else "findings: none (every p95 under 500 ms, no repeated statement)")
    for line in found:
        log(f"  - {line}")
    log(f"total wall time {total.seconds():.0f} s; {load_average()}")
    measured = [f for f in figures if not f.missing]
    max_queries = str(max(f.queries for f in measured)) if measured else "missing"

    def p95(f: Figures) -> float:
        return f.p95

    log(
        f"RESULT today_p95_ms={result_value(figures, 'today', p95)} "
        f"participants_p95_ms={result_value(figures, 'participants', p95)} "
        f"participants_filtered_p95_ms={result_value(figures, 'participants_filtered', p95)} "
        f"participant_page_p95_ms={result_value(figures, 'participant_page', p95)} "
        f"adherence_p95_ms={result_value(figures, 'adherence', p95)} "
        f"max_queries={max_queries}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
