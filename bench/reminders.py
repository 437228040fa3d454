"""Reminder benchmark: the cost of finding due reminders at 10,000 and 100,000 participants, and
dispatch throughput against a bare loop of the same SMS calls (PRODUCT.md, "Targets").

    .venv/bin/python bench/reminders.py                    # SQLite, in a temporary file
    .venv/bin/python bench/reminders.py --database-url postgresql://postgres@127.0.0.1:5432/test

The PostgreSQL run creates a database `stepdown_bench_<random>` on that server and drops it at the
end, even on error. bench/README.md says what every figure means.

How the data is made: every participant follows HEROES, cohort "stop", with full schedules from
the real engine (`expand_schedule`, once per anchor date; anchors are spread over three years so
"now" falls everywhere in the schedules). Event statuses follow the clock (completed or missed
when the window has closed, open, planned). The outbox holds what the system would have written:
each participant's reminders from the real reminder plan (`reminders.plan_event`, quiet hours
included), sent ones from the last 60 days (delivered, a few undelivered, expired or cancelled)
and pending ones for the next 48 hours, the materialize horizon. "Now" is 08:05 in Paris today:
the 08:00 "morning of" reminders are due and not yet all sent, the busiest moment of the day.
A check runs `reminders.materialize` for a few participants: it must find nothing left to write.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from config.settings import DevelopmentConfig
from notifications.dispatcher import Dispatcher
from notifications.fake_twilio import DEFAULT_FROM, FakeTwilio
from notifications.messages import MessageKind, render
from notifications.models import (
    PRIORITY_REMINDER,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from notifications.providers import RecordingProvider
from notifications.segments import count_segments
from server.app import create_app
from server.db import get_db, make_engine
from server.messaging import build_dispatcher
from server.participants.models import Locale, Participant, ParticipantStatus, Site
from server.protocols import service as protocols_service
from server.protocols.definition import Protocol, load_protocol
from server.protocols.models import Study
from server.protocols.rules import PlannedEvent, expand_schedule
from server.schedules import reminders
from server.schedules import service as schedule_service
from server.schedules.models import PENDING_STATUSES, EventStatus, ScheduleEvent
from server.surveys import texts
from server.surveys.registry import instruments

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    BulkWriter,
    Row,
    Stopwatch,
    assert_unprocessed,
    captured_sql,
    enqueue_draw_reminder,
    exit_cleanly_on_sigterm,
    median,
    percentile,
    row_processor,
    scratch_database,
    timings_ms,
)
from bench._processes import load_average  # noqa: E402

PROTOCOL_FILE = ROOT / "config" / "protocols" / "heroes.yaml"
# A stand-in for a site's licensed French QLQ-C30 text (the one the demo loads).
DEMO_QLQ_C30_TEXT = ROOT / "config" / "instruments" / "texts" / "eortc_qlq_c30.demo-fr.yaml"
COHORT = "stop"
TZ = "Europe/Paris"
LOCAL_NOW = clock_time(8, 5)  # just after the 08:00 "morning of" reminders
SITES = 24
ANCHOR_SPAN_DAYS = 1120  # anchors spread over ~3 years ...
ANCHOR_FUTURE_DAYS = 20  # ... a few still ahead (baseline draw planned, nothing sent yet)
ANCHOR_STEP = 7919  # a prime: consecutive participants get far-apart anchors
HISTORY = timedelta(days=60)  # sent reminders still in the outbox table
BACKLOG = timedelta(minutes=10)  # due and not yet sent at "now"
WITHDRAWN_AGO = timedelta(days=90)
ENROLLED_BEFORE_ANCHOR = timedelta(days=28)
LOAD_CHUNK = 2000  # participants per load transaction
CODE_PLACEHOLDER = "HXXXXXX"  # same length as the real codes (H + 6 digits)
ID_PLACEHOLDER = 987_654_321  # the participant id in template dedupe keys
QUIET_START, QUIET_END = clock_time(21, 0), clock_time(8, 0)
LINK = "http://127.0.0.1:8000/m"
FAR_PAST = datetime(2000, 1, 1, tzinfo=UTC)
# Reminders start at most this long before a window opens (window_soon: 3 days; kept generous).
REMINDER_LEAD = timedelta(days=7)

EVENT_TABLE: sa.Table = ScheduleEvent.__table__  # type: ignore[attr-defined]
PARTICIPANT_TABLE: sa.Table = Participant.__table__  # type: ignore[attr-defined]
OUTBOX_TABLE: sa.Table = OutboxMessage.__table__  # type: ignore[attr-defined]
OUTBOX_COLUMNS = [c.name for c in OUTBOX_TABLE.columns]
EVENT_COLUMNS = [c.name for c in EVENT_TABLE.columns]
# Per-participant columns substituted into converted template rows (no conversion needed).
OUTBOX_FILLED = ("id", "dedupe_key", "participant_id", "ref", "to_e164", "body", "provider_sid")
EVENT_FILLED = ("id", "participant_id")
O_ID, O_DEDUPE, O_PID, O_REF, O_TO, O_BODY, O_SID = (OUTBOX_COLUMNS.index(c) for c in OUTBOX_FILLED)
E_ID, E_PID = (EVENT_COLUMNS.index(c) for c in EVENT_FILLED)
E_NEXT = EVENT_COLUMNS.index("next_reminder_at")

# --- the queries measured ---------------------------------------------------------------------


def claim_statement(now: datetime, batch_size: int) -> Any:
    """The dispatcher's claim query, as Dispatcher.claim builds it (checked at start-up)."""
    return (
        select(OutboxMessage)
        .where(
            OutboxMessage.status == MessageStatus.PENDING,
            col(OutboxMessage.not_before_at) <= now,
        )
        .order_by(
            col(OutboxMessage.priority),
            col(OutboxMessage.not_before_at),
            col(OutboxMessage.id),
        )
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )


def candidates_statement(now: datetime, horizon: timedelta = reminders.HORIZON) -> Any:
    """reminders.materialize's query, as the job sends it (checked at start-up): the ids of
    pending events whose next reminder falls within the horizon (rows are then read in chunks)."""
    return reminders.due_events_statement(now, horizon)


def _first_select(statements: list[tuple[str, Any]], table: str) -> tuple[str, Any]:
    for statement, params in statements:
        if statement.lstrip().upper().startswith("SELECT") and f"FROM {table}" in statement:
            return statement, params
    raise AssertionError(f"no SELECT from {table} was sent")


def check_statements_match_product(engine: Engine) -> int:
    """Fail unless the statements timed here are exactly those the product sends: run
    Dispatcher.claim and reminders.materialize at a moment where nothing is due and compare
    the SQL and parameters they send with ours. Returns the dispatcher's batch size."""
    dispatcher = Dispatcher(
        session_factory=lambda: Session(engine, expire_on_commit=False),
        provider=RecordingProvider(),
        callback_base_url="http://127.0.0.1:9",
        clock=lambda: FAR_PAST,
    )
    with captured_sql(engine) as product:
        claimed = dispatcher.claim()
    assert claimed == [], "nothing may be due in 2000"
    with captured_sql(engine) as ours, Session(engine) as session:
        session.exec(claim_statement(FAR_PAST, dispatcher.batch_size)).all()
        session.rollback()
    if _first_select(product, "outbox_message") != _first_select(ours, "outbox_message"):
        raise SystemExit(
            "bench/reminders.py is out of date: Dispatcher.claim sends\n"
            f"  {_first_select(product, 'outbox_message')}\nbut the benchmark times\n"
            f"  {_first_select(ours, 'outbox_message')}"
        )
    with captured_sql(engine) as product, Session(engine) as session:
        result = reminders.materialize(session=session, now=FAR_PAST)
        session.rollback()
    assert result["events"] == 0, "no window may open in 2000"
    with captured_sql(engine) as ours, Session(engine) as session:
        session.exec(candidates_statement(FAR_PAST)).all()
        session.rollback()
    if _first_select(product, "schedule_event") != _first_select(ours, "schedule_event"):
        raise SystemExit(
            "bench/reminders.py is out of date: reminders.materialize sends\n"
            f"  {_first_select(product, 'schedule_event')}\nbut the benchmark times\n"
            f"  {_first_select(ours, 'schedule_event')}"
        )
    return dispatcher.batch_size


# --- building the data --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReminderTemplate:
    """One outbox row of one anchor date's plan; per-participant columns are filled at load."""

    row: Row
    event_index: int
    dedupe_key: str  # made for participant ID_PLACEHOLDER
    body: str  # rendered with CODE_PLACEHOLDER as the participant code
    has_sid: bool


@dataclass(frozen=True)
class Template:
    """Everything that depends only on the anchor date, converted for the driver."""

    anchor: date
    enrolled_at: datetime
    events: list[Row]
    withdrawn_events: list[Row]
    reminders: list[ReminderTemplate]


class Scenario:
    """The synthetic study: who the participants are and what their rows look like."""

    def __init__(self, engine: Engine, protocol: Protocol, now: datetime, study_id: int) -> None:
        self.protocol = protocol
        self.now = now
        self.today = now.astimezone(ZoneInfo(TZ)).date()
        self.withdrawn_at = now - WITHDRAWN_AGO
        self.study_id = study_id
        self.event_row = row_processor(engine, EVENT_TABLE)
        self.participant_row = row_processor(engine, PARTICIPANT_TABLE)
        self.outbox_row = row_processor(engine, OUTBOX_TABLE)
        assert_unprocessed(engine, OUTBOX_TABLE, OUTBOX_FILLED)
        assert_unprocessed(engine, EVENT_TABLE, EVENT_FILLED)
        self._templates: dict[int, Template] = {}

    @staticmethod
    def anchor_offset(pid: int) -> int:
        """Days between the participant's anchor and today (negative: anchor still ahead)."""
        return (pid * ANCHOR_STEP) % ANCHOR_SPAN_DAYS - ANCHOR_FUTURE_DAYS

    def is_withdrawn(self, pid: int) -> bool:
        return pid % 20 == 7 and self.anchor_offset(pid) >= 200

    @staticmethod
    def has_consent(pid: int) -> bool:
        return pid % 10 != 3

    def template(self, offset: int) -> Template:
        if offset not in self._templates:
            self._templates[offset] = self._build_template(offset)
        return self._templates[offset]

    def _event_state(
        self, p: PlannedEvent, salt: int
    ) -> tuple[EventStatus, datetime | None, datetime]:
        """(status, completed_at, updated_at) of an event at `now`, as the jobs would leave it."""
        if p.window_close_at <= self.now:
            if salt % 11 == 0:
                return EventStatus.MISSED, None, p.window_close_at
            return EventStatus.COMPLETED, p.target_at, p.target_at
        if p.window_open_at <= self.now:
            return EventStatus.OPEN, None, p.window_open_at
        return EventStatus.PLANNED, None, self.now  # overwritten with enrolled_at below

    def _build_template(self, offset: int) -> Template:
        anchor = self.today - timedelta(days=offset)
        zone = ZoneInfo(TZ)
        enrolled_at = datetime.combine(
            anchor - ENROLLED_BEFORE_ANCHOR, clock_time(10, 30), tzinfo=zone
        ).astimezone(UTC)
        planned = expand_schedule(self.protocol, cohort=COHORT, anchor_date=anchor, tz=TZ)
        # What plan_event and the dedupe key read of a participant with this anchor date.
        proto = Participant(
            id=ID_PLACEHOLDER,
            study_id=self.study_id,
            site_id=1,
            study_code=CODE_PLACEHOLDER,
            timezone=TZ,
            quiet_hours_start=QUIET_START,
            quiet_hours_end=QUIET_END,
            sms_consent_changed_at=enrolled_at,
            created_at=enrolled_at,
        )
        events: list[Row] = []
        withdrawn: list[Row] = []
        reminder_rows: list[ReminderTemplate] = []
        for index, p in enumerate(planned):
            status, completed_at, updated_at = self._event_state(p, offset * 31 + index)
            if status == EventStatus.PLANNED:
                updated_at = enrolled_at
            outcome: dict[str, str] | None = None
            if status == EventStatus.COMPLETED and p.event_type.value == "ctdna_draw":
                outcome = {"ctdna": "negative"}
            elif status == EventStatus.COMPLETED and p.event_type.value == "imaging":
                outcome = {"recist": "SD"}
            values: dict[str, Any] = {
                "id": None,
                "participant_id": None,
                "key": p.key,
                "protocol_version": self.protocol.version,
                # The planned fields exactly as enrolment stores them.
                **schedule_service._values(p),
                "status": status,
                "completed_on": p.target_date if completed_at else None,
                "completed_at": completed_at,
                "is_out_of_window": False,
                "is_touched": False,
                "status_reason": (
                    "window closed without completion" if status == EventStatus.MISSED else None
                ),
                "outcome": outcome,
                "created_at": enrolled_at,
                "updated_at": updated_at,
            }
            # As the reminder job left it at its tick at "now" (a participant who cannot be
            # texted has None: see Loader).
            values["next_reminder_at"] = (
                reminders.decide(
                    self.protocol, proto, ScheduleEvent(**values), now=self.now
                ).next_at
                if status in PENDING_STATUSES
                else None
            )
            events.append(self.event_row(values))
            if p.window_close_at > self.withdrawn_at:  # ended by the withdrawal
                withdrawn.append(
                    self.event_row(
                        values
                        | {
                            "status": EventStatus.CANCELLED,
                            "completed_on": None,
                            "completed_at": None,
                            "outcome": None,
                            "status_reason": "participant withdrawn",
                            "updated_at": self.withdrawn_at,
                            "next_reminder_at": None,
                        }
                    )
                )
            else:
                withdrawn.append(events[-1])
            if self._may_have_reminders(p):
                event = ScheduleEvent(**values)
                reminder_rows.extend(
                    self._reminders(
                        proto, index, event, status, completed_at, enrolled_at, salt=offset
                    )
                )
        return Template(anchor, enrolled_at, events, withdrawn, reminder_rows)

    def _may_have_reminders(self, p: PlannedEvent) -> bool:
        """False when every reminder of the event is surely outside [now - HISTORY, now +
        HORIZON] (a shortcut: planning reminders for all ~40,000 template events is slow)."""
        margin = REMINDER_LEAD + timedelta(days=2)
        return (
            p.window_close_at + margin >= self.now - HISTORY
            and p.window_open_at - margin <= self.now + reminders.HORIZON
        )

    def _reminders(
        self,
        proto: Participant,
        index: int,
        event: ScheduleEvent,
        status: EventStatus,
        completed_at: datetime | None,
        enrolled_at: datetime,
        *,
        salt: int,
    ) -> list[ReminderTemplate]:
        """The outbox rows this event's reminders left, as materialize and the dispatcher would:
        the reminders the product's decision keeps at enrolment (none planned before it), each
        written HORIZON ahead of its moment."""
        out: list[ReminderTemplate] = []
        now = self.now
        kept = reminders.decide(
            self.protocol, proto, event, now=enrolled_at, horizon=timedelta(days=36500)
        ).due
        for n, (r, send_at) in enumerate(kept):
            written_at = max(enrolled_at, send_at - reminders.HORIZON)
            if send_at < now - HISTORY or written_at > now:
                continue
            if completed_at is not None and completed_at <= written_at:
                continue  # the event was done before materialize reached the reminder
            values = self._outbox_values(event, r, send_at, written_at)
            if send_at > now - BACKLOG:
                if status not in PENDING_STATUSES or r.expires_at <= now:
                    continue
                pending = True  # materialized, waiting for its moment (or just due)
            else:
                pending = False
                values |= self._history(r, send_at, completed_at, (salt * 7 + index * 3 + n) % 50)
            body = values["body"]
            out.append(
                ReminderTemplate(
                    row=self.outbox_row(values),
                    event_index=index,
                    dedupe_key=dedupe_key(proto, event, r.kind),
                    body=body,
                    has_sid=not pending and values["sent_at"] is not None,
                )
            )
        return out

    def _outbox_values(
        self,
        event: ScheduleEvent,
        r: reminders.PlannedReminder,
        send_at: datetime,
        written_at: datetime,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"code": CODE_PLACEHOLDER}
        if r.message == MessageKind.REMINDER_QUESTIONNAIRE:
            params |= {"deadline": event.window_close_date, "link": LINK}
        else:
            params |= {"when": event.target_at, "tz": TZ}
        body = render(r.message, Locale.FR.value, **params)
        return {
            "id": None,
            "dedupe_key": None,
            "category": MessageCategory.REMINDER,
            "kind": r.message.value,
            "participant_id": None,
            "staff_user_id": None,
            "ref": None,
            "to_e164": None,
            "sender": None,
            "locale": Locale.FR.value,
            "body": body,
            "segments": count_segments(body).segments,
            "priority": PRIORITY_REMINDER,
            "intended_at": r.intended_at,
            "not_before_at": send_at,
            "expires_at": r.expires_at,
            "status": MessageStatus.PENDING,
            "provider_sid": None,
            "error_code": None,
            "attempts": 0,
            "lease_until_at": None,
            "last_attempt_at": None,
            "sent_at": None,
            "delivered_at": None,
            "failed_at": None,
            "status_note": None,
            "created_at": written_at,
            "updated_at": written_at,
        }

    @staticmethod
    def _history(
        r: reminders.PlannedReminder, send_at: datetime, completed_at: datetime | None, salt: int
    ) -> dict[str, Any]:
        """The final state of a reminder whose moment has passed."""
        if completed_at is not None and completed_at <= send_at:
            return {
                "status": MessageStatus.CANCELLED,
                "status_note": "event completed",
                "updated_at": completed_at,
            }
        if salt == 1:
            return {
                "status": MessageStatus.EXPIRED,
                "status_note": "expired before it could be sent",
                "updated_at": r.expires_at,
            }
        sent_at = send_at + timedelta(seconds=1)
        values: dict[str, Any] = {
            "attempts": 1,
            "last_attempt_at": send_at,
            "sent_at": sent_at,
        }
        if salt == 0:
            failed_at = sent_at + timedelta(seconds=40)
            return values | {
                "status": MessageStatus.UNDELIVERED,
                "error_code": 30003,
                "failed_at": failed_at,
                "updated_at": failed_at,
            }
        delivered_at = sent_at + timedelta(seconds=6)
        return values | {
            "status": MessageStatus.DELIVERED,
            "delivered_at": delivered_at,
            "updated_at": delivered_at,
        }

    def participant_values(self, pid: int, site_ids: Sequence[int]) -> dict[str, Any]:
        offset = self.anchor_offset(pid)
        template = self.template(offset)
        withdrawn = self.is_withdrawn(pid)
        if withdrawn:
            status = ParticipantStatus.WITHDRAWN
        elif offset < 0:
            status = ParticipantStatus.ACTIVE
        else:
            status = ParticipantStatus.OFF_TREATMENT_MONITORING
        return {
            "id": pid,
            "study_id": self.study_id,
            "site_id": site_ids[pid % len(site_ids)],
            "study_code": f"H{pid:06d}",
            "cohort": COHORT,
            "anchor_date": template.anchor,
            "protocol_version": self.protocol.version,
            "status": status,
            "timezone": TZ,
            "locale": Locale.FR,
            "phone_e164": f"+3361{pid:07d}",
            "has_sms_consent": self.has_consent(pid),
            "quiet_hours_start": QUIET_START,
            "quiet_hours_end": QUIET_END,
            "sms_consent_changed_at": template.enrolled_at,
            "withdrawn_at": self.withdrawn_at if withdrawn else None,
            "created_at": template.enrolled_at,
            "updated_at": self.withdrawn_at if withdrawn else template.enrolled_at,
        }


def dedupe_key(participant: Participant, event: ScheduleEvent, kind: str) -> str:
    """A reminder's dedupe key, made by the product's own function when it has one."""
    product = getattr(reminders, "_dedupe_key", None)
    if product is not None:
        return str(product(participant, event, kind))
    return f"reminder:{participant.id}:{event.key}:{event.target_date.isoformat()}:{kind}:sms"


class Loader:
    """Bulk-loads participants, their events and their outbox rows, with explicit ids."""

    def __init__(self, scenario: Scenario, writer: BulkWriter, site_ids: Sequence[int]) -> None:
        self.scenario = scenario
        self.writer = writer
        self.site_ids = site_ids
        self.next_pid = 1
        self.next_event_id = 1
        self.next_outbox_id = 1

    def grow_to(self, participants: int) -> dict[str, int]:
        """Add participants until there are `participants`; returns rows written per table."""
        written = {"participant": 0, "schedule_event": 0, "outbox_message": 0}
        messages: list[tuple[Any, bool, Row]] = []
        while self.next_pid <= participants:
            last = min(participants, self.next_pid + LOAD_CHUNK - 1)
            p_rows, e_rows = self._chunk(range(self.next_pid, last + 1), messages)
            written["participant"] += self.writer.write(PARTICIPANT_TABLE, p_rows)
            written["schedule_event"] += self.writer.write(EVENT_TABLE, e_rows)
            self.next_pid = last + 1
        # Outbox rows go in in the order materialize wrote them (by created_at), not participant
        # by participant: where the rows due together sit on disk matters to the claim's cost.
        messages.sort(key=lambda m: m[0])
        o_rows: list[Row] = []
        for _written_at, has_sid, row in messages:
            row[O_ID] = self.next_outbox_id
            if has_sid:
                row[O_SID] = f"SM{self.next_outbox_id:032x}"
            self.next_outbox_id += 1
            o_rows.append(row)
            if len(o_rows) == LOAD_CHUNK * 20:
                written["outbox_message"] += self.writer.write(OUTBOX_TABLE, o_rows)
                o_rows = []
        written["outbox_message"] += self.writer.write(OUTBOX_TABLE, o_rows)
        tables = [PARTICIPANT_TABLE, EVENT_TABLE, OUTBOX_TABLE]
        self.writer.after_explicit_ids(tables)
        self.writer.analyze(tables)
        return written

    def _chunk(
        self, pids: range, messages: list[tuple[Any, bool, Row]]
    ) -> tuple[list[Row], list[Row]]:
        """Participant and event rows of these participants; their outbox rows (without ids yet)
        are appended to `messages` as (created_at, needs a provider sid, row)."""
        scenario = self.scenario
        p_rows: list[Row] = []
        e_rows: list[Row] = []
        created_at = OUTBOX_COLUMNS.index("created_at")
        for pid in pids:
            p_rows.append(scenario.participant_row(scenario.participant_values(pid, self.site_ids)))
            template = scenario.template(scenario.anchor_offset(pid))
            withdrawn = scenario.is_withdrawn(pid)
            textable = scenario.has_consent(pid)
            first_event = self.next_event_id
            for index, source in enumerate(
                template.withdrawn_events if withdrawn else template.events
            ):
                row = list(source)
                row[E_ID] = first_event + index
                row[E_PID] = pid
                if not textable:
                    row[E_NEXT] = None  # the job read it once and found nobody to text
                e_rows.append(row)
            self.next_event_id += len(template.events)
            if withdrawn or not scenario.has_consent(pid):
                continue
            code, phone = f"H{pid:06d}", f"+3361{pid:07d}"
            key_prefix = (f"reminder:{ID_PLACEHOLDER}:", f"reminder:{pid}:")
            for reminder in template.reminders:
                row = list(reminder.row)
                row[O_DEDUPE] = reminder.dedupe_key.replace(*key_prefix, 1)
                row[O_PID] = pid
                row[O_REF] = reminders.event_ref(first_event + reminder.event_index)
                row[O_TO] = phone
                row[O_BODY] = reminder.body.replace(CODE_PLACEHOLDER, code)
                messages.append((row[created_at], reminder.has_sid, row))
        return p_rows, e_rows


def create_reference_rows(
    engine: Engine, protocol: Protocol, now: datetime
) -> tuple[int, list[int]]:
    """The study (with its recorded protocol version) and the sites; (study id, site ids)."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        study = Study(
            key=protocol.study, title=protocol.title, protocol_key=protocol.key, created_at=now
        )
        sites = [
            Site(
                code=f"FR-{n:02d}",
                name=f"Centre {n:02d}",
                country="FR",
                timezone=TZ,
                created_at=now,
            )
            for n in range(1, SITES + 1)
        ]
        session.add(study)
        session.add_all(sites)
        protocols_service.record_version(session=session, protocol=protocol, now=now)
        # HEROES asks the QLQ-C30, whose wording a site loads from its licensed copy: loaded (the
        # demo's French stand-in) long before, so the questionnaires' reminders go.
        texts.load_text(
            session=session,
            instrument=instruments()["eortc_qlq_c30"],
            locale=Locale.FR.value,
            raw=DEMO_QLQ_C30_TEXT.read_bytes(),
            source_file=DEMO_QLQ_C30_TEXT.name,
            actor="bench",
            now=now - timedelta(days=5 * 365),
        )
        session.flush()
        return study.id, [s.id for s in sites]  # type: ignore[return-value,misc]


# --- measuring ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeFigures:
    participants: int
    events: int
    outbox_rows: int
    pending: int
    due: int
    claim_ms: list[float]
    claimed: int
    claim_quiet_ms: list[float]
    candidates_ms: list[float]
    candidates: int


def count_rows(engine: Engine, now: datetime) -> dict[str, int]:
    with Session(engine) as session:

        def count(q: Any) -> int:
            return int(session.exec(q).one())

        pending = col(OutboxMessage.status) == MessageStatus.PENDING
        return {
            "participants": count(select(func.count()).select_from(Participant)),
            "events": count(select(func.count()).select_from(ScheduleEvent)),
            "outbox": count(select(func.count()).select_from(OutboxMessage)),
            "pending": count(select(func.count()).select_from(OutboxMessage).where(pending)),
            "due": count(
                select(func.count())
                .select_from(OutboxMessage)
                .where(pending, col(OutboxMessage.not_before_at) <= now)
            ),
        }


def time_claim(
    engine: Engine, now: datetime, batch_size: int, repeat: int
) -> tuple[list[float], int]:
    """Median-ready timings of the claim query (execute + fetch the ORM rows, as claim does),
    each in its own transaction that changes nothing."""
    statement = claim_statement(now, batch_size)
    found = 0

    def once() -> float:
        nonlocal found
        with Session(engine, expire_on_commit=False) as session, session.begin():
            start = time.perf_counter()
            rows = session.exec(statement).all()
            elapsed = time.perf_counter() - start
            found = len(rows)
        return elapsed

    return timings_ms(once, repeat=repeat), found


def time_candidates(engine: Engine, now: datetime, repeat: int) -> tuple[list[float], int]:
    """Timings of the reminder job's query at the 09:00 tick (the events whose next reminder
    comes due then): execute and fetch every row."""
    statement = candidates_statement(morning_tick(now))
    found = 0

    def once() -> float:
        nonlocal found
        with engine.connect() as conn:
            start = time.perf_counter()
            rows = conn.execute(statement).all()
            elapsed = time.perf_counter() - start
            found = len(rows)
            conn.rollback()
        return elapsed

    return timings_ms(once, repeat=repeat, warmup=1), found


def measure(engine: Engine, now: datetime, batch_size: int, repeat: int) -> SizeFigures:
    counts = count_rows(engine, now)
    claim_ms, claimed = time_claim(engine, now, batch_size, repeat)
    # Six hours earlier nothing is pending yet: the claim is a bare index probe.
    quiet_ms, _ = time_claim(engine, now - timedelta(hours=6), batch_size, repeat)
    candidates_ms, candidates = time_candidates(engine, now, max(3, repeat // 10))
    return SizeFigures(
        participants=counts["participants"],
        events=counts["events"],
        outbox_rows=counts["outbox"],
        pending=counts["pending"],
        due=counts["due"],
        claim_ms=claim_ms,
        claimed=claimed,
        claim_quiet_ms=quiet_ms,
        candidates_ms=candidates_ms,
        candidates=candidates,
    )


def report_size(label: str, f: SizeFigures) -> None:
    print(
        f"[{label}] rows: participants={f.participants:,} schedule_event={f.events:,} "
        f"outbox_message={f.outbox_rows:,} (pending={f.pending:,}, due now={f.due:,})"
    )
    print(
        f"[{label}] claim query (due now, {f.claimed} rows returned): "
        f"median {median(f.claim_ms):.3f} ms, "
        f"p90 {percentile(f.claim_ms, 90):.3f} ms over {len(f.claim_ms)} runs"
    )
    print(
        f"[{label}] claim query (nothing due, 6 h earlier): "
        f"median {median(f.claim_quiet_ms):.3f} ms"
    )
    per_row = median(f.candidates_ms) * 1000.0 / max(1, f.candidates)
    print(
        f"[{label}] reminder job query at the 09:00 tick: median {median(f.candidates_ms):.1f} ms "
        f"for {f.candidates:,} due events ({per_row:.1f} µs/row) over {len(f.candidates_ms)} runs"
    )


def explain(engine: Engine, statement: Any) -> list[str]:
    """The plan of a statement as the product sends it (EXPLAIN QUERY PLAN on SQLite; EXPLAIN
    ANALYZE on PostgreSQL, rolled back so FOR UPDATE leaves nothing behind)."""
    with captured_sql(engine) as seen, Session(engine) as session:
        session.exec(statement).first()
        session.rollback()
    sql, params = next((s, p) for s, p in seen if s.lstrip().upper().startswith("SELECT"))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
            depth: dict[int, int] = {0: 0}
            lines = []
            for node, parent, _unused, detail in rows:
                depth[node] = depth.get(parent, 0) + 1
                lines.append("  " * depth[node] + str(detail))
            return lines
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).all()
        conn.rollback()
        return ["  " + str(r[0]) for r in rows]


@dataclass(frozen=True)
class JobFigures:
    """The reminder job's ticks at one size."""

    idle_ms: list[float]  # a tick right after a tick: nothing due
    idle_events: int
    morning_ms: list[float]  # the 09:00 tick: every 09:00 reminder two days ahead comes due
    morning_events: int
    morning_written: int


def morning_tick(now: datetime) -> datetime:
    """09:00 in Paris the day of `now`: the tick after which the reminders of 09:00 two days
    ahead (day_before, window_soon, overdue, questionnaires) fall within the horizon."""
    zone = ZoneInfo(TZ)
    return datetime.combine(now.astimezone(zone).date(), clock_time(9), zone).astimezone(UTC)


def time_job(engine: Engine, at: datetime, repeat: int) -> tuple[list[float], int, int]:
    """The reminder job (`reminders.materialize` as `materialize_job` runs it, all in one
    transaction here and rolled back, so every run sees the same data): timings, events read,
    reminders written."""
    timings: list[float] = []
    events = written = 0
    for _ in range(repeat):
        with Session(engine, expire_on_commit=False) as session:
            watch = Stopwatch()
            result = reminders.materialize(session=session, now=at)
            timings.append(watch.seconds() * 1000.0)
            session.rollback()
        events, written = result["events"], result["created"]
    return timings, events, written


def measure_job(engine: Engine, now: datetime, repeat: int) -> JobFigures:
    idle_ms, idle_events, idle_written = time_job(engine, now, repeat)
    if idle_written:
        raise SystemExit(f"the loaded state is not what the job leaves: {idle_written} written")
    morning_ms, events, written = time_job(engine, morning_tick(now), max(1, repeat // 5))
    return JobFigures(idle_ms, idle_events, morning_ms, events, written)


def report_job(label: str, f: JobFigures) -> None:
    print(
        f"[{label}] reminder job, nothing due (the state its {LOCAL_NOW:%H:%M} tick left): "
        f"median {median(f.idle_ms):.2f} ms, max {max(f.idle_ms):.2f} ms over {len(f.idle_ms)} "
        f"runs; {f.idle_events} events read"
    )
    print(
        f"[{label}] reminder job, the 09:00 tick (every 09:00 reminder two days ahead comes due): "
        f"median {median(f.morning_ms):.1f} ms over {len(f.morning_ms)} runs; "
        f"{f.morning_events:,} events read, {f.morning_written:,} reminders written"
    )


def check_materialize_agrees(engine: Engine, now: datetime, participants: int) -> str:
    """Run the real reminders.materialize for a few participants with pending reminders (rolled
    back): it must find its reminders already written, i.e. the bulk-loaded outbox is what the
    job itself would have produced."""
    with Session(engine, expire_on_commit=False) as session:
        pids = list(
            session.exec(
                select(OutboxMessage.participant_id)
                .where(
                    OutboxMessage.status == MessageStatus.PENDING,
                    col(OutboxMessage.participant_id) <= participants,
                )
                .distinct()
                .order_by(col(OutboxMessage.participant_id))
                .limit(8)
            ).all()
        )
        events = created = 0
        for pid in pids:
            result = reminders.materialize(session=session, now=now, participant_id=pid)
            events += result["events"]
            created += result["created"]
        session.rollback()
    verdict = "agrees" if created == 0 else "DISAGREES (the loaded outbox misses rows)"
    return (
        f"materialize check: {len(pids)} participants, {events} candidate events, "
        f"{created} reminders left to write -> the loaded outbox {verdict}"
    )


# --- a mass event: a month of back-dated enrolments ---------------------------------------------

MASS_DAYS_BACK = 30
WRITER_PAUSE_S = 0.05  # between two ctDNA results of the concurrent writer


@dataclass(frozen=True)
class MassFigures:
    batch: int
    enrolled: int
    missed: int
    alerts: int
    job_s: float
    transactions: list[float]  # seconds each, in order
    writer_idle_ms: list[float]
    writer_busy_ms: list[float]


def add_site_staff(session: Session, site_ids: Sequence[int], now: datetime) -> None:
    """A nurse (on call) and a coordinator with verified phones per site: alerts reach someone,
    as in a real study (an alert with nobody to tell costs less)."""
    from server.auth import service as auth_service
    from server.auth.models import Role, SiteMembership

    for n, site_id in enumerate(site_ids):
        for k, role in enumerate((Role.NURSE, Role.COORDINATOR)):
            user = auth_service.create_user(
                session=session,
                actor=None,
                email=f"{role.value}.{site_id}@bench.example",
                full_name=f"{role.value.title()} {site_id}",
                password="bench-password-1",
                role=role,
                site_ids=[site_id],
                now=now,
                phone_e164=f"+3367{n:04d}{k:03d}",
                is_phone_verified=True,
            )
            if role == Role.NURSE:
                membership = session.exec(
                    select(SiteMembership).where(SiteMembership.user_id == user.id)
                ).one()
                membership.is_on_call = True
                session.add(membership)


def mass_enrol(
    loader: Loader, engine: Engine, count: int, now: datetime
) -> tuple[list[int], datetime]:
    """`count` HEROES participants enrolled a minute ago with their anchor MASS_DAYS_BACK days
    back, as enrolment leaves them: every event planned or open (closed windows are the status
    job's to mark missed), their next reminder due at once. Returns their ids."""
    scenario = loader.scenario
    zone = ZoneInfo(TZ)
    enrolled_at = now - timedelta(minutes=1)
    anchor = now.astimezone(zone).date() - timedelta(days=MASS_DAYS_BACK)
    planned = expand_schedule(scenario.protocol, cohort=COHORT, anchor_date=anchor, tz=TZ)
    pids = list(range(loader.next_pid, loader.next_pid + count))
    p_rows: list[Row] = []
    e_rows: list[Row] = []
    for pid in pids:
        p_rows.append(
            scenario.participant_row(
                scenario.participant_values(pid, loader.site_ids)
                | {
                    "study_code": f"M{pid:06d}",
                    "anchor_date": anchor,
                    "status": ParticipantStatus.OFF_TREATMENT_MONITORING,
                    "has_sms_consent": True,
                    "withdrawn_at": None,
                    "sms_consent_changed_at": enrolled_at,
                    "created_at": enrolled_at,
                    "updated_at": enrolled_at,
                }
            )
        )
        for p in planned:
            is_open = p.window_open_at <= enrolled_at < p.window_close_at
            e_rows.append(
                scenario.event_row(
                    {
                        "id": loader.next_event_id,
                        "participant_id": pid,
                        "key": p.key,
                        "protocol_version": scenario.protocol.version,
                        **schedule_service._values(p),
                        "status": EventStatus.OPEN if is_open else EventStatus.PLANNED,
                        "completed_on": None,
                        "completed_at": None,
                        "is_out_of_window": False,
                        "is_touched": False,
                        "status_reason": None,
                        "outcome": None,
                        "next_reminder_at": enrolled_at,
                        "created_at": enrolled_at,
                        "updated_at": enrolled_at,
                    }
                )
            )
            loader.next_event_id += 1
    loader.next_pid += count
    loader.writer.write(PARTICIPANT_TABLE, p_rows)
    loader.writer.write(EVENT_TABLE, e_rows)
    loader.writer.after_explicit_ids([PARTICIPANT_TABLE, EVENT_TABLE])
    return pids, enrolled_at


def ctdna_writer(
    app: Any, now: datetime, codes: Sequence[str], stop: Any, out: list[float], tag: str
) -> None:
    """A lab posting negative ctDNA results, one every WRITER_PAUSE_S, each in its own
    transaction (what POST /results/ctdna does after parsing): `out` gets each one's ms."""
    from server.results import service as results_service
    from server.results.models import ResultKind

    with app.app_context():
        database = get_db(app)
        n = 0
        while not stop.is_set():
            code = codes[(n * ANCHOR_STEP) % len(codes)]
            watch = Stopwatch()
            with database.job_session() as session:
                results_service.ingest(
                    session=session,
                    kind=ResultKind.CTDNA,
                    source="bench-lab",
                    accession_id=f"{tag}-{n}",
                    study_code=code,
                    study_key="HEROES",
                    fields={
                        "collected_at": now - timedelta(days=2),
                        "reported_at": now - timedelta(hours=1),
                        "call": "negative",
                        "assay": "Signatera",
                        "mtm_per_ml": None,
                        "pam_mutation": None,
                        "retracts_pam_mutation_of": None,
                    },
                    now=now,
                    actor="bench:lab",
                )
            out.append(watch.seconds() * 1000.0)
            n += 1
            stop.wait(WRITER_PAUSE_S)


def mass_event(
    url: str, loader: Loader, now: datetime, count: int, batch: int, tag: str
) -> MassFigures:
    """Enrol `count` participants a month back, then run the status job (missed windows, their
    alerts) while a lab posts ctDNA results: how long each of the job's transactions held the
    database, and how long the lab's results took meanwhile (and before, at rest)."""
    import threading

    import sqlalchemy.event

    from server.alerts.models import Alert
    from server.schedules import jobs

    config = DevelopmentConfig()
    config.DATABASE_URL = url
    app = create_app(config)
    database = get_db(app)
    pids, _ = mass_enrol(loader, database.engine, count, now)
    consenting = [
        f"H{pid:06d}"
        for pid in range(1, min(pids) - 1)
        if Scenario.has_consent(pid) and not loader.scenario.is_withdrawn(pid)
    ][:5000]
    with database.engine.connect() as conn:
        alerts_before = conn.execute(select(func.count()).select_from(Alert)).scalar_one()

    def writer_run(seconds: float | None, out: list[float]) -> tuple[Any, Any]:
        stop = threading.Event()
        thread = threading.Thread(
            target=ctdna_writer, args=(app, now, consenting, stop, out, f"{tag}-{len(out)}")
        )
        thread.start()
        if seconds is not None:
            stop.wait(seconds)
            stop.set()
            thread.join()
        return stop, thread

    idle: list[float] = []
    writer_run(3.0, idle)
    busy: list[float] = []
    stop, thread = writer_run(None, busy)
    transactions: list[float] = []
    began: list[float] = []
    old_batch = jobs.BATCH
    jobs.BATCH = batch
    try:
        with app.app_context(), database.job_session() as session:
            sqlalchemy.event.listen(
                session, "after_begin", lambda *_: began.append(time.perf_counter())
            )
            sqlalchemy.event.listen(
                session,
                "after_commit",
                lambda *_: transactions.append(time.perf_counter() - began[-1]),
            )
            watch = Stopwatch()
            result = jobs.update_event_statuses(session=session, now=now)
        job_s = watch.seconds()
    finally:
        jobs.BATCH = old_batch
        stop.set()
        thread.join()
    with database.engine.connect() as conn:
        alerts = conn.execute(select(func.count()).select_from(Alert)).scalar_one() - alerts_before
    database.engine.dispose()
    return MassFigures(batch, count, result["missed"], alerts, job_s, transactions, idle, busy)


def report_mass(f: MassFigures, label: str) -> None:
    print(
        f"mass event ({label}, {f.batch} events per transaction): {f.enrolled:,} participants "
        f"enrolled with their anchor {MASS_DAYS_BACK} days back; the status job marked "
        f"{f.missed:,} events missed and opened {f.alerts:,} alerts in {f.job_s:.1f} s, "
        f"{len(f.transactions)} transactions, longest {max(f.transactions) * 1000:.0f} ms "
        f"(median {median(f.transactions) * 1000:.0f} ms)"
    )
    print(
        f"mass event ({label}): a lab's ctDNA results meanwhile: p50 "
        f"{median(f.writer_busy_ms):.0f} ms, p95 {percentile(f.writer_busy_ms, 95):.0f} ms, max "
        f"{max(f.writer_busy_ms):.0f} ms over {len(f.writer_busy_ms)}; at rest before: p50 "
        f"{median(f.writer_idle_ms):.0f} ms, p95 {percentile(f.writer_idle_ms, 95):.0f} ms "
        f"over {len(f.writer_idle_ms)}"
    )


# --- dispatch throughput ------------------------------------------------------------------------


@dataclass(frozen=True)
class DispatchFigures:
    enqueued: int
    backlog: int
    sent: int
    dispatch_s: float
    bare_sent: int
    bare_s: float

    @property
    def dispatch_per_s(self) -> float:
        return self.sent / self.dispatch_s

    @property
    def bare_per_s(self) -> float:
        return self.bare_sent / self.bare_s


def enqueue_due_reminders(
    session: Session, now: datetime, count: int, participants: int, *, tag: str = "bench_dispatch"
) -> None:
    """`count` due reminders written with outbox.enqueue, as the reminder job writes them."""
    zone = ZoneInfo(TZ)
    when = datetime.combine(now.astimezone(zone).date() + timedelta(days=1), clock_time(9), zone)
    consenting = [pid for pid in range(1, participants + 1) if Scenario.has_consent(pid)]
    for n in range(count):
        pid = consenting[n * ANCHOR_STEP % len(consenting)]
        code = f"H{pid:06d}"
        enqueue_draw_reminder(
            session,
            dedupe_key=f"reminder:{pid}:{tag}:{n}:day_before:sms",
            to=f"+3361{pid:07d}",
            code=code,
            when=when,
            tz=TZ,
            due_at=now - timedelta(seconds=30),
            expires_at=now + timedelta(hours=2),
            participant_id=pid,
            ref=f"{tag}:{n}",
            now=now - timedelta(minutes=5),
        )


def dispatch_benchmark(url: str, now: datetime, count: int, participants: int) -> DispatchFigures:
    """Dispatcher.run_once over `count` freshly enqueued due reminders (plus the due backlog),
    then a bare loop of the same provider calls against the same fake."""
    config = DevelopmentConfig()
    with FakeTwilio(
        account_sid=config.TWILIO_ACCOUNT_SID or "",
        auth_token=config.TWILIO_AUTH_TOKEN or "",
        callbacks_enabled=False,  # callback POSTs would compete with the sends for the CPU
    ) as fake:
        config.DATABASE_URL = url
        config.SMS_PROVIDER = "fake"
        config.TWILIO_BASE_URL = fake.base_url
        config.TWILIO_FROM_NUMBER = DEFAULT_FROM
        config.TWILIO_MESSAGING_SERVICE_SID = None
        config.PUBLIC_BASE_URL = "http://127.0.0.1:9"  # never called: callbacks are off
        app = create_app(config)
        database = get_db(app)
        backlog = count_rows(database.engine, now)["due"]
        with database.job_session() as session:
            enqueue_due_reminders(session, now, count, participants)
        enqueued = count_rows(database.engine, now)["due"] - backlog
        # The scheduler process's dispatcher, with the sender's rate limit off (rate <= 0 means
        # no limit: no send slot is asked for) and the clock frozen at "now".
        dispatcher = build_dispatcher(app, rate_per_second=0.0, clock=lambda: now)
        provider = dispatcher.provider
        for n in range(20):  # warm up connections, imports and caches on both sides
            provider.send_sms(to=f"+3369{n:07d}", body="warm-up", status_callback=None)
        fake.clear_messages()

        watch = Stopwatch()
        stats = dispatcher.run_once()
        dispatch_s = watch.seconds()
        if stats.sent != stats.claimed or stats.sent != enqueued + backlog:
            raise SystemExit(f"dispatch did not send every due message cleanly: {stats}")
        calls = fake.messages()
        fake.clear_messages()

        watch = Stopwatch()
        for m in calls:
            provider.send_sms(
                to=m.to,
                body=m.body,
                status_callback=m.status_callback,
                attempt=m.attempt or 1,
                validity_period=m.validity_period,
            )
        bare_s = watch.seconds()
        database.engine.dispose()
    return DispatchFigures(enqueued, backlog, stats.sent, dispatch_s, len(calls), bare_s)


# --- main ---------------------------------------------------------------------------------------


def bench_now() -> datetime:
    """08:05 today in Paris, in UTC."""
    zone = ZoneInfo(TZ)
    today = datetime.now(zone).date()
    return datetime.combine(today, LOCAL_NOW, tzinfo=zone).astimezone(UTC)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL; a scratch database is created there and dropped after "
        "(default: SQLite in a temporary file)",
    )
    parser.add_argument("--small", type=int, default=10_000, help="first size (participants)")
    parser.add_argument("--large", type=int, default=100_000, help="second size (participants)")
    parser.add_argument("--repeat", type=int, default=50, help="timed runs of the claim query")
    parser.add_argument(
        "--job-repeat",
        type=int,
        default=20,
        help="timed runs of the reminder job with nothing due (a fifth as many of the 09:00 tick)",
    )
    parser.add_argument(
        "--messages",
        type=int,
        help="due reminders enqueued for the dispatch run (default 2000 SQLite, 5000 PostgreSQL)",
    )
    parser.add_argument(
        "--mass",
        type=int,
        default=1000,
        help="participants enrolled with their anchor a month back for the mass event, twice "
        "(in transactions of 500 events, as before, then of the status job's batch); 0: skip",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from server.schedules import jobs

    args = parse_args(argv)
    exit_cleanly_on_sigterm()
    total = Stopwatch()
    mass: list[MassFigures] = []
    with scratch_database(args.database_url) as url:
        engine = make_engine(url)
        dialect = engine.dialect.name
        now = bench_now()
        protocol = load_protocol(PROTOCOL_FILE)
        # Loaded once per process, as the scheduler's app loads them at start.
        protocols_service.current_protocols()
        print(
            f"database: {dialect} ({engine.url.render_as_string(hide_password=True)}); "
            f"now = {now.isoformat()} ({now.astimezone(ZoneInfo(TZ)):%H:%M} {TZ}); "
            f"{load_average(cpus=True)}"
        )
        batch_size = check_statements_match_product(engine)
        print(
            "checked: the timed statements are the ones Dispatcher.claim and "
            "reminders.materialize send"
        )
        study_id, site_ids = create_reference_rows(engine, protocol, now)
        scenario = Scenario(engine, protocol, now, study_id)
        writer = BulkWriter(url)
        loader = Loader(scenario, writer, site_ids)
        results: dict[int, SizeFigures] = {}
        job: dict[int, JobFigures] = {}
        try:
            for size in (args.small, args.large):
                watch = Stopwatch()
                written = loader.grow_to(size)
                print(
                    f"[{size:,}] loaded {written['participant']:,} participants, "
                    f"{written['schedule_event']:,} events, {written['outbox_message']:,} outbox "
                    f"rows in {watch.seconds():.1f} s"
                )
                results[size] = measure(engine, now, batch_size, args.repeat)
                report_size(f"{size:,}", results[size])
                job[size] = measure_job(engine, now, args.job_repeat)
                report_job(f"{size:,}", job[size])
            print(f"EXPLAIN of the claim query at {args.large:,} participants:")
            for line in explain(engine, claim_statement(now, batch_size)):
                print(line)
            print(f"EXPLAIN of the reminder job's query at {args.large:,} participants:")
            for line in explain(engine, candidates_statement(morning_tick(now))):
                print(line)
            print(check_materialize_agrees(engine, now, args.large))
            engine.dispose()

            messages = args.messages or (5000 if dialect == "postgresql" else 2000)
            d = dispatch_benchmark(url, now, messages, args.large)
            print(
                f"dispatch: {d.sent:,} messages ({d.enqueued:,} enqueued + {d.backlog:,} due "
                f"backlog) in {d.dispatch_s:.2f} s = {d.dispatch_per_s:.1f}/s; bare loop: "
                f"{d.bare_sent:,} in {d.bare_s:.2f} s = {d.bare_per_s:.1f}/s"
            )
            if args.mass:
                with Session(make_engine(url), expire_on_commit=False) as session:
                    add_site_staff(session, site_ids, now)
                    session.commit()
                for label, batch in (("before", 500), ("now", jobs.BATCH)):
                    mass.append(mass_event(url, loader, now, args.mass, batch, f"mass-{label}"))
                    report_mass(mass[-1], label)
        finally:
            writer.close()
    print(f"total wall time {total.seconds():.0f} s; {load_average(cpus=True)}")
    small, large = results[args.small], results[args.large]
    js, jl = job[args.small], job[args.large]
    figures = (
        f"RESULT due_query_ms_10k={median(small.claim_ms):.3f} "
        f"due_query_ms_100k={median(large.claim_ms):.3f} "
        f"dispatch_per_s={d.dispatch_per_s:.1f} bare_per_s={d.bare_per_s:.1f} "
        f"ratio={d.dispatch_per_s / d.bare_per_s:.2f} "
        f"job_idle_ms_10k={median(js.idle_ms):.2f} job_idle_ms_100k={median(jl.idle_ms):.2f} "
        f"job_idle_ratio={median(jl.idle_ms) / median(js.idle_ms):.2f} "
        f"job_morning_ms_10k={median(js.morning_ms):.0f} "
        f"job_morning_ms_100k={median(jl.morning_ms):.0f} "
        f"morning_written_10k={js.morning_written} morning_written_100k={jl.morning_written}"
    )
    if mass:
        before, after = mass
        figures += (
            f" mass_longest_txn_ms_before={max(before.transactions) * 1000:.0f} "
            f"mass_longest_txn_ms={max(after.transactions) * 1000:.0f} "
            f"mass_writer_p95_ms_before={percentile(before.writer_busy_ms, 95):.0f} "
            f"mass_writer_p95_ms={percentile(after.writer_busy_ms, 95):.0f}"
        )
    print(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
