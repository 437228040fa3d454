"""The demo installation (`stepdown seed-demo`): two sites, four studies, one staff user per role
per site, and six participants whose past months really happened, through the real services.

Nothing is written behind the services' backs. The story is a list of dated steps (enrolments,
draws, scans, lab results, questionnaires, a STOP by SMS, alerts handled) run in
chronological order, each with `now` set to its own moment, and the scheduler's event-status job
runs before every step exactly as it would have: windows open, missed ones are marked missed (and
audited), decisions and alerts open when their inputs arrive. So every row agrees with every
other and the audit trail reads like a year of use. The last result arrives at the seed's `now`,
so its alert is fresh: `make run` sends its first-tier SMS and escalates it like any other. One
alert is older and nobody answered it (FH-002): the scheduler's, the dispatcher's and the fake
Twilio's part in its half hour are steps too, so it reached the site's fail-safe before `now` and
`make run` has nothing of it left to send.

Anchors are counted back from today (the participant's local date), so the demo looks the same
whenever it is seeded.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from notifications import outbox
from notifications.models import MessageStatus, OutboxMessage
from server import messaging
from server.alerts import service as alerts
from server.alerts import voice
from server.alerts.models import Alert, AlertKind, AlertState, VoiceCall
from server.auth import service as auth_service
from server.auth.models import Role, SiteMembership, StaffUser
from server.auth.service import actor_of
from server.db import Database
from server.inbound import handle_inbound
from server.oncall import service as oncall
from server.participants import service as participant_service
from server.participants.models import Locale, Participant, ParticipantStatus, Site
from server.protocols import service as protocols
from server.protocols.models import Study
from server.results import service as results
from server.results.models import ResultKind
from server.schedules import jobs as schedule_jobs
from server.schedules import reminders
from server.schedules import service as schedules
from server.schedules.models import ScheduleEvent
from server.surveys import service as surveys
from server.surveys import texts
from server.surveys.registry import instruments

DEMO_PASSWORD = "stepdown-demo-2026"
# A stand-in for the Paris site's licensed French QLQ-C30 text (the EORTC wording never ships).
DEMO_QLQ_C30_TEXT = (
    Path(__file__).resolve().parents[1] / "config" / "instruments" / "texts"
) / "eortc_qlq_c30.demo-fr.yaml"

DEMO_SITES = [
    ("PARIS-01", "Institut d'oncologie (démo) Paris", "FR", "Europe/Paris"),
    ("BOSTON-01", "Demo Cancer Center Boston", "US", "America/New_York"),
]
# Each site's fail-safe (issue 16), both options side by side: Paris calls on its investigators
# (a role), Boston on the hospital operator desk (a number, texted without an ACK code).
DEMO_FAILSAFE = {
    "PARIS-01": {"failsafe_role": "investigator"},
    "BOSTON-01": {"failsafe_phone_e164": "+16175550190"},
}
# FH-002's positive ctDNA result arrived this long before the seed's now, and nobody answered:
# its escalation, played as history, reaches Boston's fail-safe about five minutes before now.
UNANSWERED_BEFORE = timedelta(minutes=31)
# The history's scheduler pass (escalation, calls, dispatch) runs this often; a call placed in
# one pass rings out unanswered by the next.
HISTORY_PASS = timedelta(seconds=30)
DEMO_STUDIES = [
    ("HEROES", "HEROES — stopping anti-HER2 maintenance guided by ctDNA", "heroes"),
    ("FREE-HER", "Free-HER — anti-HER2 therapy de-escalation with ctDNA monitoring", "free-her"),
    ("STOP-HER2", "STOP-HER2 — stopping first-line anti-HER2 therapy", "stop-her2"),
    ("NCT07239271", "ctDNA-adaptive neoadjuvant therapy for HER2+ breast cancer", "nct07239271"),
]
# Demo phone numbers: valid formats, in ranges no real subscriber should hold.
DEMO_STAFF_PHONES = {"PARIS-01": "+3361000{:04d}", "BOSTON-01": "+1617555{:04d}"}
# The installation "exists" this long before the seed's now: staff accounts predate every
# enrolment, so the audit trail never shows a user acting before they existed.
HISTORY = timedelta(days=400)


@dataclass(frozen=True)
class DemoParticipant:
    """One demo participant: where, which study, and how many days ago their anchor was."""

    study: str
    site: str
    code: str
    cohort: str | None
    anchor_days_ago: int
    locale: Locale
    phone: str
    status: ParticipantStatus = ParticipantStatus.OFF_TREATMENT_MONITORING


# HER-002 has almost a year of follow-up (four negative ctDNA tests, then a positive one that
# arrives today); NEO-001 is at cycle 3 of the adaptive arm, with its regimen decision due today.
DEMO_PARTICIPANTS = [
    DemoParticipant("HEROES", "PARIS-01", "HER-001", "stop", 30, Locale.FR, "+33612340001"),
    DemoParticipant("HEROES", "PARIS-01", "HER-002", "stop", 345, Locale.FR, "+33612340002"),
    # Both stop anti-HER2 in two days: their baseline questionnaire is open.
    DemoParticipant("HEROES", "PARIS-01", "HER-003", "stop", -2, Locale.FR, "+33612340004"),
    DemoParticipant("HEROES", "PARIS-01", "HER-004", "stop", -2, Locale.EN, "+33612340005"),
    # Their baseline questionnaire is the site's own check-in (real text in their language).
    DemoParticipant("HEROES", "PARIS-01", "HER-005", "stop", -2, Locale.FR, "+33612340006"),
    DemoParticipant("HEROES", "PARIS-01", "HER-006", "stop", -2, Locale.EN, "+33612340007"),
    DemoParticipant("HEROES", "PARIS-01", "HER-007", "stop", -2, Locale.ZH, "+33612340008"),
    # In screening at HEROES's entry gate, their planned stop date two weeks ahead.
    DemoParticipant(
        "HEROES",
        "PARIS-01",
        "HER-008",
        None,
        -14,
        Locale.FR,
        "+33612340009",
        ParticipantStatus.SCREENING,
    ),
    DemoParticipant(
        "HEROES",
        "PARIS-01",
        "HER-009",
        None,
        -14,
        Locale.FR,
        "+33612340010",
        ParticipantStatus.SCREENING,
    ),
    DemoParticipant("STOP-HER2", "BOSTON-01", "SH2-001", "stop", 60, Locale.EN, "+16175550101"),
    DemoParticipant("STOP-HER2", "BOSTON-01", "SH2-002", "continue", 10, Locale.EN, "+16175550102"),
    DemoParticipant("FREE-HER", "BOSTON-01", "FH-001", None, 200, Locale.EN, "+16175550103"),
    DemoParticipant("FREE-HER", "BOSTON-01", "FH-002", None, 175, Locale.EN, "+16175550104"),
    DemoParticipant(
        "NCT07239271",
        "PARIS-01",
        "NEO-001",
        "adaptive",
        42,
        Locale.ZH,
        "+33612340003",
        ParticipantStatus.ACTIVE,
    ),
]


@contextmanager
def one_transaction(database: Database) -> Iterator[Session]:
    """A session whose work commits once, at the end, or not at all.

    The scheduler's jobs that the story runs commit as they go (they are written for a real
    scheduler); here those commits only release a SAVEPOINT inside one outer transaction, so a
    seed that fails half-way leaves an empty database rather than half a demo that `--if-empty`
    would then keep. (Under the test harness the bind is already a connection inside a
    transaction and its sessions join it the same way.)
    """
    if not isinstance(database.bind, Engine):
        with database.job_session() as session:
            yield session
        return
    with database.engine.connect() as connection, connection.begin():
        session = Session(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        try:
            yield session
            session.commit()
        finally:
            session.close()


@dataclass(order=True)
class Step:
    """One dated thing that happened; steps run in order of `at` (then of writing)."""

    at: datetime
    order: int
    what: str = field(compare=False)
    run: Callable[[], object] = field(compare=False)


# --- questionnaire answers ------------------------------------------------------------------------


def qlq_c30(
    *,
    global_health: int,
    fatigue: int = 1,
    diarrhoea: int = 1,
    worry: int = 1,
    physical: int = 1,
    pain: int = 1,
) -> dict[str, int]:
    """A complete EORTC QLQ-C30 answer set: items 1-28 on 1-4 (1 = not at all), global health
    (29-30) on 1-7, with a few knobs for the scales the story moves."""
    answers = {f"q{i}": 1 for i in range(1, 29)}
    answers.update({"q1": physical, "q2": physical, "q3": max(1, physical - 1)})
    answers.update({"q9": pain, "q19": max(1, pain - 1)})
    answers.update({"q10": fatigue, "q12": fatigue, "q18": max(1, fatigue - 1)})
    answers.update({"q17": diarrhoea, "q22": worry, "q24": worry, "q11": max(1, worry - 1)})
    answers.update({"q29": global_health, "q30": min(7, global_health + 1)})
    return answers


# --- the story ------------------------------------------------------------------------------------


class DemoStory:
    """Builds the demo on one session: the installation first, then the dated steps in order."""

    def __init__(self, *, session: Session, now: datetime, public_base_url: str) -> None:
        self.session = session
        self.now = now
        self.link = public_base_url.rstrip("/") + "/"
        self.sites: dict[str, Site] = {}
        self.staff: dict[tuple[Role, str], StaffUser] = {}
        self.emails: list[str] = []
        self.specs = {p.code: p for p in DEMO_PARTICIPANTS}
        self.study_keys = {key: protocol_key for key, _, protocol_key in DEMO_STUDIES}
        self.participants: dict[str, Participant] = {}
        self.steps: list[Step] = []

    # -- time ------------------------------------------------------------------------------------

    def zone(self, code: str) -> ZoneInfo:
        return ZoneInfo(next(tz for c, _, _, tz in DEMO_SITES if c == self.specs[code].site))

    def anchor(self, code: str) -> date:
        today = self.now.astimezone(self.zone(code)).date()
        return today - timedelta(days=self.specs[code].anchor_days_ago)

    def day(self, code: str, offset: int, hh_mm: str = "10:00") -> datetime:
        """A local wall-clock moment `offset` days after the participant's anchor, as UTC."""
        hour, minute = (int(x) for x in hh_mm.split(":"))
        local = datetime.combine(
            self.anchor(code) + timedelta(days=offset), time(hour, minute), self.zone(code)
        )
        return local.astimezone(ZoneInfo("UTC"))

    # -- steps -----------------------------------------------------------------------------------

    def step(self, at: datetime, what: str, run: Callable[[], object]) -> None:
        if at > self.now:
            raise RuntimeError(f"demo step in the future: {what} at {at.isoformat()}")
        self.steps.append(Step(at, len(self.steps), what, run))

    def coordinator(self, code: str) -> StaffUser:
        return self.staff[(Role.COORDINATOR, self.specs[code].site)]

    def event(self, code: str, key: str) -> ScheduleEvent:
        participant = self.participants[code]
        found = self.session.exec(
            select(ScheduleEvent).where(
                ScheduleEvent.participant_id == participant.id, ScheduleEvent.key == key
            )
        ).first()
        if found is None:
            raise RuntimeError(f"demo: {code} has no event {key}")
        return found

    def enroll(self, code: str, at: datetime) -> None:
        spec = self.specs[code]

        def run() -> None:
            user = self.coordinator(code)
            self.participants[code] = participant_service.enroll(
                session=self.session,
                user=user,
                study=spec.study,
                site_id=self.sites[spec.site].id,  # type: ignore[arg-type]
                study_code=code,
                timezone=None,
                cohort=spec.cohort,
                anchor_date=self.anchor(code),
                status=spec.status,
                locale=spec.locale,
                phone=spec.phone,
                has_sms_consent=True,
                eligibility=self.passed_gate(spec, at),
                now=at,
            )

        self.step(at, f"{code} enrolled", run)

    def passed_gate(self, spec: DemoParticipant, at: datetime) -> dict[str, Any] | None:
        """A demo participant enrolled in monitoring passed their protocol's entry gate before
        Stepdown: its facts are attested at enrolment (issue 17), as the enrolment form asks."""
        gate = protocols.find_protocol(self.study_keys[spec.study]).entry_gate
        if gate is None or spec.status == ParticipantStatus.SCREENING:
            return None
        held = min(self.anchor(spec.code), at.astimezone(self.zone(spec.code)).date())
        return {f.key: {"value": f.passes[0], "observed_on": held} for f in gate.facts}

    def complete(self, code: str, key: str, at: datetime, reason: str | None = None) -> None:
        """The coordinator records that an event took place (on the local day of `at`)."""

        def run() -> None:
            user = self.coordinator(code)
            participant = self.participants[code]
            schedules.complete_event(
                session=self.session,
                participant=participant,
                event=self.event(code, key),
                completed_on=at.astimezone(self.zone(code)).date(),
                now=at,
                actor=actor_of(user),
                actor_user_id=user.id,
                reason=reason,
            )

        self.step(at, f"{code} {key} done", run)

    def _ingest(
        self, code: str, kind: ResultKind, lab: str, accession: str, at: datetime, **fields: Any
    ) -> None:
        def run() -> None:
            user = self.coordinator(code)
            results.ingest(
                session=self.session,
                kind=kind,
                source=lab,
                accession_id=accession,
                study_code=code,
                study_key=self.specs[code].study,
                fields={**fields, "reported_at": at},
                now=at,
                actor=actor_of(user),
                actor_user_id=user.id,
                site_ids=[self.sites[self.specs[code].site].id],
            )

        self.step(at, f"{code} {kind.value} result {accession}", run)

    def ctdna(
        self, code: str, n: int, drawn: datetime, call: str, mtm: float, at: datetime
    ) -> None:
        """A ctDNA result (Signatera) for the blood drawn at `drawn`, reported at `at`."""
        self._ingest(
            code,
            ResultKind.CTDNA,
            "natera",
            f"SIG-{code}-{n:02d}",
            at,
            collected_at=drawn,
            assay="Signatera",
            call=call,
            mtm_per_ml=mtm,
            pam_mutation=None,
        )

    def imaging(self, code: str, n: int, performed: datetime, recist: str, at: datetime) -> None:
        """A radiology report (RECIST 1.1) for the scan done on the local day of `performed`."""
        site = self.specs[code].site.split("-")[0].lower()
        self._ingest(
            code,
            ResultKind.IMAGING,
            f"{site}-radiology",
            f"RAD-{code}-{n:02d}",
            at,
            modality="ct",
            performed_on=performed.astimezone(self.zone(code)).date(),
            recist=recist,
            is_confirmed=False,
        )

    def questionnaire(self, code: str, key: str, answers: dict[str, int], at: datetime) -> None:
        """The participant answers a questionnaire through its SMS link."""

        def run() -> None:
            surveys.save(
                session=self.session,
                participant=self.participants[code],
                event=self.event(code, key),
                answers=answers,
                submit=True,
                channel="web",
                now=at,
            )

        self.step(at, f"{code} {key} answered", run)

    def check_in(self, code: str, key: str, at: datetime) -> None:
        """The coordinator has the participant answer Stepdown's check-in for this questionnaire
        (HEROES leaves its quality-of-life instrument to the site)."""

        def run() -> None:
            user = self.coordinator(code)
            surveys.use_instrument(
                session=self.session,
                participant=self.participants[code],
                event=self.event(code, key),
                instrument_key="qol_checkin",
                now=at,
                actor=actor_of(user),
                actor_user_id=user.id,
                reason="the site's short check-in, in the participant's language",
            )

        self.step(at, f"{code} {key} asks the check-in", run)

    def reminders(self, code: str, at: datetime) -> None:
        """The scheduler writes the participant's reminders due in the next 48 hours."""

        def run() -> None:
            reminders.materialize(
                session=self.session, now=at, participant_id=self.participants[code].id
            )

        self.step(at, f"{code} reminders", run)

    def scheduler_tick(self, at: datetime, *, results_watchdog: bool = False) -> None:
        """What the scheduler does every minute (and, with the watchdog, every hour)."""

        def run() -> None:
            self._tick(at)
            if results_watchdog:
                results.overdue_results(session=self.session, now=at)

        self.step(at, "scheduler", run)

    def _tick(self, at: datetime) -> None:
        schedule_jobs.update_event_statuses(session=self.session, now=at)
        schedule_jobs.evaluate_decisions(session=self.session, now=at)

    def _alert(self, code: str, kind: AlertKind) -> Alert:
        return self.session.exec(
            select(Alert).where(
                Alert.participant_id == self.participants[code].id, Alert.kind == kind
            )
        ).one()

    def acknowledge(self, code: str, kind: AlertKind, role: Role, at: datetime, note: str) -> None:
        """A staff member acknowledges the participant's alert of this kind from the web page."""

        def run() -> None:
            alerts.acknowledge(
                session=self.session,
                alert=self._alert(code, kind),
                user=self.staff[(role, self.specs[code].site)],
                channel="web",
                now=at,
                note=note,
            )

        self.step(at, f"{code} {kind.value} alert acknowledged", run)

    def resolve(self, code: str, kind: AlertKind, role: Role, at: datetime, note: str) -> None:
        """A staff member resolves the participant's alert of this kind, saying what was done."""

        def run() -> None:
            alerts.resolve(
                session=self.session,
                alert=self._alert(code, kind),
                user=self.staff[(role, self.specs[code].site)],
                note=note,
                now=at,
            )

        self.step(at, f"{code} {kind.value} alert resolved", run)

    def sms_stop(self, code: str, at: datetime) -> None:
        """The participant replies STOP to a reminder: no more SMS, the care team is told."""

        def run() -> None:
            handle_inbound(
                session=self.session,
                message_sid=f"SMdemo{code.replace('-', '').lower()}stop",
                from_number=self.participants[code].phone_e164 or "",
                body="STOP",
                opt_out_type=None,
                now=at,
                link=self.link,
            )

        self.step(at, f"{code} replied STOP", run)

    def unanswered(self, code: str, opened: datetime) -> None:
        """Nobody answers the participant's critical alert, opened at `opened`: what the
        scheduler, the dispatcher and the fake Twilio did, pass after pass until now, through
        the real jobs and status functions (fake SIDs). Each SMS was sent and delivered, each
        call rang out unanswered, and the escalation went on until the site's fail-safe fired;
        `make run` finds nothing of it left to send."""
        at = opened + timedelta(seconds=1)  # the dispatcher takes the first SMS at once
        while at < self.now:
            run = functools.partial(self._history_pass, code, at)
            self.step(at, f"{code} alert unanswered", run)
            at += HISTORY_PASS

    def _history_pass(self, code: str, at: datetime) -> None:
        alert = self._alert(code, AlertKind.CTDNA_POSITIVE)
        session = self.session
        # The fake Twilio: the calls placed at the last pass rang out (Twilio's status webhook).
        for call in session.exec(
            select(VoiceCall).where(VoiceCall.alert_id == alert.id, VoiceCall.status == "calling")
        ).all():
            voice.on_status(session, call, "no-answer", "", at)
        # The scheduler: the escalation job, then the calls job.
        alerts.escalate_due(session=session, now=at)
        voice.place_due_calls(
            session=session, now=at, provider=_HistoryCalls(), base_url=self.link.rstrip("/")
        )
        # The dispatcher: the alert's SMS handed to the provider, then the delivery callback.
        pending = session.exec(
            select(OutboxMessage)
            .where(
                OutboxMessage.ref == f"alert:{alert.id}",
                OutboxMessage.status == MessageStatus.PENDING,
                col(OutboxMessage.not_before_at) <= at,
            )
            .order_by(col(OutboxMessage.id))
        ).all()
        for row in pending:
            sid = "SM" + hashlib.sha256(f"demo-sms:{row.id}".encode()).hexdigest()[:32]
            row.attempts += 1
            row.last_attempt_at = at
            outbox.advance(session, row, MessageStatus.SENDING, source="dispatcher", now=at)
            row.provider_sid = sid
            outbox.advance(session, row, MessageStatus.SENT, source="dispatcher", now=at)
            outbox.apply_callback(
                session,
                message_id=row.id,  # type: ignore[arg-type]
                sid=sid,
                provider_status="delivered",
                error_code=None,
                now=at + timedelta(seconds=2),
            )
        session.flush()
        if alert.state != AlertState.OPEN:
            raise RuntimeError(f"demo: {code}'s alert was acknowledged in its history")

    # -- the installation ------------------------------------------------------------------------

    def install(self) -> None:
        """Sites, studies and staff, as they were set up before the first enrolment."""
        at = self.now - HISTORY
        session = self.session
        for code, name, country, tz in DEMO_SITES:
            self.sites[code] = auth_service.create_site(
                session=session,
                actor=None,
                code=code,
                name=name,
                country=country,
                timezone=tz,
                now=at,
                **DEMO_FAILSAFE[code],
            )
        for key, title, protocol_key in DEMO_STUDIES:
            session.add(Study(key=key, title=title, protocol_key=protocol_key, created_at=at))
        session.flush()
        admin = auth_service.create_user(
            session=session,
            actor=None,
            email="admin@demo.stepdown.test",
            full_name="Demo Admin",
            password=DEMO_PASSWORD,
            role=Role.ADMIN,
            site_ids=[s.id for s in self.sites.values() if s.id is not None],
            phone_e164="+33610009999",
            is_phone_verified=True,
            now=at,
        )
        self.emails.append(admin.email)
        n = 0
        for code, site in self.sites.items():
            slug = code.split("-")[0].lower()
            for role in (Role.INVESTIGATOR, Role.COORDINATOR, Role.NURSE, Role.MONITOR):
                n += 1
                user = auth_service.create_user(
                    session=session,
                    actor=None,
                    email=f"{role.value}.{slug}@demo.stepdown.test",
                    full_name=f"Demo {role.value.title()} {slug.title()}",
                    password=DEMO_PASSWORD,
                    role=role,
                    site_ids=[site.id],  # type: ignore[list-item]
                    phone_e164=DEMO_STAFF_PHONES[code].format(n) if role != Role.MONITOR else None,
                    is_phone_verified=role != Role.MONITOR,
                    now=at,
                )
                self.staff[(role, code)] = user
                self.emails.append(user.email)
                if role == Role.NURSE:
                    # The demo nurse is on call: first tier of clinical alerts.
                    membership = session.exec(
                        select(SiteMembership).where(SiteMembership.user_id == user.id)
                    ).one()
                    membership.is_on_call = True
                    session.add(membership)
        session.flush()
        # A rota per site (issue 16): the nurse holds the primary layer (daily, 08:00 site time),
        # the coordinator and the investigator take turns as backup (weekly, Monday 08:00).
        for code, site in self.sites.items():
            started = at.astimezone(ZoneInfo(site.timezone)).date()
            for layer, period, roles in (
                ("primary", "daily", (Role.NURSE,)),
                ("backup", "weekly", (Role.COORDINATOR, Role.INVESTIGATOR)),
            ):
                oncall.set_rota(
                    session=session,
                    site=site,
                    layer=layer,
                    period=period,
                    handover="08:00",
                    handover_weekday=0,
                    starts_on=started,
                    members=[self.staff[(r, code)].id for r in roles],  # type: ignore[misc]
                    actor=admin,
                    now=at,
                )
        # HEROES asks the EORTC QLQ-C30, whose wording each site loads from its licensed copy:
        # the admin loaded the French one (here the demo's stand-in) before the first enrolment.
        # No English text: HER-004's questionnaire waits for it, and Today says why.
        texts.load_text(
            session=session,
            instrument=instruments()["eortc_qlq_c30"],
            locale="fr",
            raw=DEMO_QLQ_C30_TEXT.read_bytes(),
            source_file=DEMO_QLQ_C30_TEXT.name,
            actor=actor_of(admin),
            now=at,
        )

    # -- the participants' histories ---------------------------------------------------------------

    def plan(self) -> None:
        """Every dated step of the histories (see each block for the story it tells)."""
        d = self.day

        # HER-001 (HEROES, Paris): a month off treatment, all on track. Baseline ctDNA negative,
        # first quality-of-life questionnaire answered; the next draw is in seven weeks.
        c = "HER-001"
        self.enroll(c, d(c, -25, "11:00"))
        self.complete(c, "ctdna_baseline:1", d(c, -21, "09:40"))
        self.ctdna(c, 1, d(c, -21, "09:40"), "negative", 0.0, d(c, -11, "14:00"))
        self.questionnaire(
            c, "qol:1", qlq_c30(global_health=5, fatigue=2, worry=2), d(c, 2, "18:30")
        )

        # HER-002 (HEROES, Paris): almost a year off anti-HER2 therapy. Four negative ctDNA tests
        # (one drawn a day late, see below) and clear scans every 12 weeks, quality of life
        # improving at 0, 3 and 6 months; the fifth draw, nine days ago, comes back POSITIVE
        # today: an open alert for the on-call nurse. That round's scan is not done yet (its
        # window is open).
        c = "HER-002"
        self.enroll(c, d(c, -25, "11:00"))
        self.complete(c, "ctdna_baseline:1", d(c, -21, "09:40"))
        self.ctdna(c, 1, d(c, -21, "09:40"), "negative", 0.0, d(c, -11, "14:00"))
        qol = [
            qlq_c30(global_health=4, fatigue=3, diarrhoea=3, worry=3, physical=2, pain=2),
            qlq_c30(global_health=5, fatigue=2, diarrhoea=2, worry=2, physical=2),
            qlq_c30(global_health=6, fatigue=2),
        ]
        # Months 0, 3 and 6 after the anchor (calendar months: targets on days 0, 89-92, 181-184).
        for n, answered in ((1, d(c, 3, "19:10")), (2, d(c, 94, "20:05")), (3, d(c, 186, "12:45"))):
            self.questionnaire(c, f"qol:{n}", qol[n - 1], answered)
        # The first monitoring draw slipped a day past its window: the scheduler marked it missed
        # and told the coordinator, who called her; the lab's result then completed the draw
        # (late, flagged) and the coordinator closed the alert.
        self.scheduler_tick(d(c, 92, "00:05"))
        self.acknowledge(
            c,
            AlertKind.MISSED_WINDOW,
            Role.COORDINATOR,
            d(c, 92, "09:10"),
            "Called her: unwell last week, coming in for the draw this morning",
        )
        self.ctdna(c, 2, d(c, 92, "10:30"), "negative", 0.0, d(c, 102, "14:00"))
        self.resolve(
            c,
            AlertKind.MISSED_WINDOW,
            Role.COORDINATOR,
            d(c, 102, "15:00"),
            "Drawn one day after the window; the result is in",
        )
        for n, draw_day in enumerate((84, 168, 252), start=1):
            if n > 1:
                drawn = d(c, draw_day, "09:40")
                self.complete(c, f"ctdna:{n}", drawn)
                self.ctdna(c, n + 1, drawn, "negative", 0.0, d(c, draw_day + 10, "14:00"))
            scanned = d(c, draw_day + 2, "15:00")
            self.complete(c, f"imaging:{n}", scanned)
            self.imaging(c, n, scanned, "CR", d(c, draw_day + 4, "16:30"))
        drawn = d(c, 336, "09:40")
        self.complete(c, "ctdna:4", drawn)
        self.ctdna(c, 5, drawn, "positive", 0.42, self.now)

        # HER-003 and HER-004 (HEROES, Paris): baseline ctDNA negative; they stop anti-HER2 in
        # two days and their baseline quality-of-life questionnaire opened five days ago.
        # HER-003 reads French: her SMS with the survey link waits in the outbox (`make run`
        # sends it through the fake Twilio). HER-004 reads English, which the site has no
        # QLQ-C30 text for: her questionnaire and its reminders wait (Today says why).
        for c in ("HER-003", "HER-004"):
            self.enroll(c, d(c, -25, "11:00"))
            self.complete(c, "ctdna_baseline:1", d(c, -21, "09:40"))
            self.ctdna(c, 1, d(c, -21, "09:40"), "negative", 0.0, d(c, -11, "14:00"))
            self.reminders(c, d(c, -8, "12:00"))

        # HER-005, HER-006 and HER-007 (HEROES, Paris) read French, English and Chinese: the
        # coordinator gave their baseline questionnaire the site's own check-in at enrolment, so
        # each SMS links to it in her language (Stepdown's wording, in the instrument file).
        for c in ("HER-005", "HER-006", "HER-007"):
            self.enroll(c, d(c, -25, "11:00"))
            self.check_in(c, "qol:1", d(c, -25, "11:05"))
            self.complete(c, "ctdna_baseline:1", d(c, -21, "09:40"))
            self.ctdna(c, 1, d(c, -21, "09:40"), "negative", 0.0, d(c, -11, "14:00"))
            self.reminders(c, d(c, -8, "12:00"))

        # HER-008 and HER-009 (HEROES, Paris) are in screening: only the entry gate's baseline
        # draw is planned. HER-008's baseline comes back Signatera-POSITIVE today: the gate
        # decides she continues anti-HER2 maintenance (not followed further; nothing planned, no
        # reminder) and the coordinator gets a routine task, not a page. HER-009's came back
        # negative three days ago: the gate waits for the coordinator to confirm her stop date.
        for c, call, reported in (("HER-008", "positive", 0), ("HER-009", "negative", -3)):
            self.enroll(c, d(c, -25, "11:00"))
            self.complete(c, "ctdna_baseline:1", d(c, -21, "09:40"))
            at = self.now if reported == 0 else self.now + timedelta(days=reported)
            self.ctdna(c, 1, d(c, -21, "09:40"), call, 0.31 if call == "positive" else 0.0, at)

        # SH2-001 (STOP-HER2, Boston): baseline scan clear. The weeks 4-6 visit window closed
        # while she was away: the scheduler marked the visit and both blood draws missed. She
        # came two days later for the visit and the research blood draw (recorded late, with
        # the reason); the tumour marker tube was not drawn, so that event stays missed.
        c = "SH2-001"
        self.enroll(c, d(c, -20, "11:00"))
        self.complete(c, "baseline_scan:1", d(c, -6, "14:00"))
        self.imaging(c, 1, d(c, -6, "14:00"), "CR", d(c, -4, "16:30"))
        self.scheduler_tick(d(c, 43, "00:05"))
        late = "Participant was travelling; seen two days after the window closed"
        self.complete(c, "visit:1", d(c, 44, "10:00"), reason=late)
        self.complete(c, "research_blood:1", d(c, 44, "10:30"), reason=late)

        # SH2-002 (STOP-HER2, Boston, continuing therapy): baseline scan done, then two hours
        # ago she replied STOP to our SMS: unreachable by SMS, the care team is told.
        c = "SH2-002"
        self.enroll(c, d(c, -14, "11:00"))
        self.complete(c, "baseline_scan:1", d(c, -5, "14:00"))
        self.imaging(c, 1, d(c, -5, "14:00"), "SD", d(c, -3, "16:30"))
        self.sms_stop(c, self.now - timedelta(hours=2))

        # FH-001 (Free-HER, Boston): two rounds of monitoring. The first ctDNA result came back
        # negative; the second draw, a month ago, never got its result: the hourly watchdog
        # opened a "result overdue" alert, which the coordinator acknowledged while chasing the
        # lab. The result is still missing today.
        c = "FH-001"
        self.enroll(c, d(c, -3, "11:00"))
        for n, draw_day in enumerate((84, 168), start=1):
            drawn = d(c, draw_day, "09:30")
            self.complete(c, f"ctdna:{n}", drawn)
            self.complete(c, f"routine_bloods:{n}", d(c, draw_day, "09:35"))
            scanned = d(c, draw_day + 2, "13:00")
            self.complete(c, f"imaging:{n}", scanned)
            self.imaging(c, n, scanned, "CR", d(c, draw_day + 4, "16:30"))
        self.ctdna(c, 1, d(c, 84, "09:30"), "negative", 0.0, d(c, 95, "14:00"))
        self.scheduler_tick(d(c, 183, "07:00"), results_watchdog=True)
        self.acknowledge(
            c,
            AlertKind.RESULT_OVERDUE,
            Role.COORDINATOR,
            d(c, 183, "09:20"),
            "Asked Natera for the result; they are tracing the sample",
        )

        # FH-002 (Free-HER, Boston): the first monitoring ctDNA came back negative; the second,
        # drawn a week ago, came back POSITIVE half an hour ago, and nobody answered: the on-call
        # nurse's SMS and the call 10 minutes later (no answer), every nurse and the coordinator,
        # then the investigator's SMS and call (no answer). The fail-safe fired about five minutes
        # ago: Boston's operator desk got an SMS and every Boston staff page shows the red banner
        # until someone acknowledges.
        c = "FH-002"
        self.enroll(c, d(c, -3, "11:00"))
        for n, draw_day in enumerate((84, 168), start=1):
            drawn = d(c, draw_day, "09:30")
            self.complete(c, f"ctdna:{n}", drawn)
            self.complete(c, f"routine_bloods:{n}", d(c, draw_day, "09:35"))
            scanned = d(c, draw_day + 2, "13:00")
            self.complete(c, f"imaging:{n}", scanned)
            self.imaging(c, n, scanned, "CR", d(c, draw_day + 4, "16:30"))
        self.ctdna(c, 1, d(c, 84, "09:30"), "negative", 0.0, d(c, 95, "14:00"))
        positive = self.now - UNANSWERED_BEFORE
        self.ctdna(c, 2, d(c, 168, "09:30"), "positive", 0.87, positive)
        self.unanswered(c, positive)

        # NEO-001 (NCT07239271 adaptive arm, Paris): baseline and after-cycle-1 ctDNA negative,
        # two cycles of Nab-P+HP given, partial response on the after-cycle-2 scan: the regimen
        # decision for cycles 3-4 is due today, with the protocol's recommendation.
        c = "NEO-001"
        self.enroll(c, d(c, -10, "11:00"))
        self.complete(c, "ctdna_baseline:1", d(c, -7, "09:30"))
        self.ctdna(c, 1, d(c, -7, "09:30"), "negative", 0.0, d(c, 3, "14:00"))
        self.complete(c, "cycle:1", d(c, 0, "14:00"))
        self.complete(c, "ctdna_c1:1", d(c, 20, "09:30"))
        self.complete(c, "cycle:2", d(c, 21, "14:00"))
        self.ctdna(c, 2, d(c, 20, "09:30"), "negative", 0.0, d(c, 30, "14:00"))
        self.complete(c, "imaging_c2:1", d(c, 38, "11:00"))
        self.imaging(c, 1, d(c, 38, "11:00"), "PR", d(c, 39, "17:00"))

    def run(self) -> None:
        """Run the steps in time order, the scheduler's status job before each, then one last
        scheduler pass at `now` (so the pages are right even before the scheduler starts)."""
        for step in sorted(self.steps):
            try:
                self._tick(step.at)
                step.run()
            except Exception as exc:
                exc.add_note(f"demo step: {step.what} at {step.at.isoformat()}")
                raise
        self._tick(self.now)
        results.overdue_results(session=self.session, now=self.now)
        reminders.materialize(session=self.session, now=self.now)
        # Activation codes and reminders whose moment passed while no dispatcher ran expire,
        # as the scheduler's outbox job would; everything else stays pending for the dispatcher.
        messaging.expire_stale(session=self.session, now=self.now)
        self.session.flush()


class _HistoryCalls:
    """The voice provider of the demo's history: takes each call and names it (a fake SID)."""

    def place_call(self, *, to: str, url: str, status_callback: str) -> str:
        return "CA" + hashlib.sha256(f"demo-call:{status_callback}".encode()).hexdigest()[:32]


# Printed after the logins: where each page of the care team has something to show.
WHAT_TO_LOOK_AT = """\
What the demo shows (nurse.paris / coordinator.boston see their own site; admin sees both):
  HER-002  ctDNA turned positive today: open alert on Today and Alerts; ctDNA chart, scans,
           quality of life over a year; a late draw whose missed-window alert was resolved
  NEO-001  regimen decision after cycle 2 due today, with the protocol's recommendation
  HER-001  a month into monitoring, on track
  HER-003  stops anti-HER2 in two days; her SMS (fake Twilio) links to the open quality-of-life
           questionnaire, step by step in French (the demo's stand-in for the licensed text)
  HER-004  reads English: no English QLQ-C30 text is loaded, so her questionnaire waits (Today)
  HER-005  her SMS links to the site's check-in, in French; HER-006 in English, HER-007 in Chinese
  HER-008  screening: baseline Signatera positive today, so the entry gate decided she continues
           maintenance (nothing planned; a routine task for the coordinator)
  HER-009  screening: baseline negative; the entry gate waits for her stop date (participant
           page: "Confirm the stop date"), then plans monitoring from it
  SH2-001  weeks 4-6 window missed: one event still missed, two done late (adherence)
  SH2-002  replied STOP by SMS two hours ago: unreachable
  FH-001   a ctDNA result overdue (alert acknowledged, result still missing)
  FH-002   ctDNA positive half an hour ago and nobody answered (SMS, two calls not answered):
           Boston's fail-safe fired 5 minutes ago (its operator desk number was texted); every
           Boston page shows the red banner until someone acknowledges (alert page); the
           acknowledgement report (/reports/ack-times) counts it as reaching the fail-safe
SMS queued in the past (welcome messages, HER-002's alert) go out through the fake Twilio when
`make run` starts its dispatcher; HER-002's nurse gets a call 10 minutes later, and the fake
Twilio's default keypad press (1) acknowledges it. FH-002's SMS and calls are history: nothing
of them is sent again."""


def seed(*, session: Session, now: datetime, public_base_url: str) -> list[str]:
    """Build the whole demo on an empty database; returns the staff logins."""
    story = DemoStory(session=session, now=now, public_base_url=public_base_url)
    story.install()
    story.plan()
    story.run()
    return story.emails


def staff_emails(session: Session) -> list[str]:
    """Every staff login, oldest first."""
    return [u.email for u in session.exec(select(StaffUser).order_by(col(StaffUser.id)))]
