"""Bearer secrets reach their owner and nobody else (issue 11, item 2).

A participant with a phone and SMS consent gets a welcome, activation codes and a questionnaire
reminder carrying its signed survey link; the on-call nurse gets an alert SMS with its
acknowledgement code, and holds a secret calendar link (shown to her once, at creation). Then,
for every staff role, every route of the app's url_map is requested (JSON API, pages, CSV
export, audit views; reads, then the actions that return a message or an alert, then everything
else), before and after the dispatcher sends: no answer holds an activation code, a survey
token, an acknowledgement code or the calendar link's token or hash, and neither does any
audit row. The
staff view still tells what each message was: its kind, and its text with "[code hidden]" /
"[link hidden]" in place of the secret. Once sent, the outbox itself has forgotten the secrets,
and the participant's code (as the phone received it) still activates the app.

The list of endpoints is checked against app.url_map: a new route fails this test until it is
classified here (and so requested, for every role).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from sqlmodel import Session, select

from notifications.messages import CODE_HIDDEN, LINK_HIDDEN, MessageKind
from notifications.models import MessageLog, MessageStatus, OutboxMessage
from notifications.providers import RecordingProvider
from server.alerts import service as alert_service
from server.alerts.models import Alert, AlertKind
from server.audit import AuditEvent
from server.auth.models import Role, SiteMembership
from server.auth.service import hash_token
from server.messaging import build_dispatcher
from server.oncall import service as oncall
from server.participants.mobile import ActivationCode
from server.participants.models import Participant
from server.schedules import reminders
from server.schedules.models import ScheduleEvent
from tests import clock, factories

PHONE = "+33612340301"
STUDY_CODE = "A-301"
# The participant's first questionnaire window (qol:1) is open; 13:00 in Paris, no quiet hours.
# The first questionnaire's window opened at 00:00 and its "opens" reminder (09:00) is due.
T = clock.moment("2026-12-28T12:00")
CARE_PHONES = {"nurse": "+33610000301", "coordinator": "+33610000302"}

# --- every endpoint, classified ------------------------------------------------------------------

# Routes whose answers carry messages, alerts, or a record that lists them.
CARRY_MESSAGES_OR_ALERTS = {
    "messages.history": "a participant's messages",
    "messages.cancel": "returns the message",
    "messages.resend": "returns the new message",
    "messages.send_activation": "queues an activation code",
    "alerts.list_alerts": "alerts",
    "alerts.get_alert": "one alert with its messages and timeline",
    "alerts.acknowledge": "returns the alert",
    "alerts.resolve": "returns the alert",
    "participants.audit_history": "audit rows, messages' included",
    "participant_page.show": "the participant page: messages, alerts, audit",
    "today.today": "alerts to acknowledge, unreachable participants",
    "today.alerts_page": "alerts",
    "today.alert_page": "one alert with its messages",
    "today.alert_acknowledge": "alert action",
    "today.alert_resolve": "alert action",
    "adherence_pages.export_csv": "CSV export",
    "adherence_pages.export_odm": "CDISC ODM export: schedule, results, answers, audit trail",
    "ack_report_pages.page": "each month's acknowledgement times",
    "ack_report_pages.export_csv": "CSV of each alert's moments",
    "reports.acknowledgement": "each alert's moments",
    "today.coming_up_csv": "CSV export of the windows coming up",
    "adherence_pages.participants": "participants behind a count",
    "participants.ParticipantView": "a participant",
    "participants.ParticipantsView": "participants",
    "participants_pages.participants": "participants list",
    "schedules.schedule": "a participant's events",
    "twilio.inbound": "SMS webhook (answers with TwiML)",
    "twilio.status_callback": "delivery webhook",
    "twilio.voice_twiml": "what an alert call says (a participant's code)",
    "twilio.voice_gather": "an alert call's keypress",
    "twilio.voice_status": "an alert call's outcome",
    "fhir.search_type": "FHIR search (requested as Communication: one per SMS)",
    "fhir.read": "one FHIR resource (requested as a Communication)",
}
# Routes that hold no message data; requested all the same, for every role.
OTHER = {
    "pages.change_password",
    "pages.login",
    "pages.logout",
    "adherence_pages.overview",
    "docs.api_docs",
    "api-docs.openapi_json",
    "auth.me",
    "fhir.metadata",
    "fhir.other",
    "fhir.search_subscriptions",
    "fhir.read_subscription",
    "fhir.subscription_status",
    "fhir.create_subscription",
    "fhir.delete_subscription",
    "auth.TokenView",
    "mobile.activate",
    "mobile.calendar",
    "mobile.preferences",
    "mobile.update_preferences",
    "schedules.participant_choices",
    "schedules.set_participant_choice",
    "schedules.decision_report",
    "participant_page.set_choice",
    "mobile.questionnaires",
    "mobile.answer",
    "mobile.schedule",
    "mobile.revoke",
    "schedules.participant_adherence",
    "schedules.decisions",
    "schedules.record_decision",
    "schedules.cancel",
    "schedules.complete",
    "schedules.reschedule",
    "results.timeline",
    "surveys.scores",
    "participants.withdraw",
    "schedules.list_protocols",
    "schedules.get_protocol",
    "schedules.preview",
    "results.post_ctdna",
    "results.post_fhir",
    "results.post_hl7v2",
    "results.post_imaging",
    "results.quarantine",
    "results.post_marker",
    "admin.SitesView",
    "admin.SiteView",
    "schedules.site_adherence",
    "alerts.escalation",
    "alerts.set_on_call",
    "alerts.set_alert_levels",
    "admin.StudiesView",
    "schedules.study_adherence",
    "admin.UsersView",
    "admin.UserView",
    "health.healthz",
    "health.readyz",
    "status_pages.status",
    "participant_page.record_decision",
    "participant_page.complete_event",
    "participants_pages.enroll",
    "participants.gate_state",
    "participants.attest_fact",
    "participants.override_gate",
    "participant_page.attest_fact",
    "participant_page.override_gate",
    "oncall.get_rotas",
    "oncall.set_rota",
    "oncall.add_override",
    "oncall.my_calendar",
    "oncall_pages.page",
    "oncall_pages.my_calendar",
    "oncall.calendar_link_state",
    "oncall.create_calendar_link",
    "oncall.revoke_calendar_link",
    "oncall_pages.create_calendar_link",
    "oncall_pages.stop_calendar_link",
    "oncall_pages.calendar_feed",
}
NOT_REQUESTED = {
    "static": "files from disk",
    "survey.survey": "the participant's own questionnaire, opened with the secret link itself",
}
# Query strings some reads need to answer more than 400.
QUERY = {
    "adherence_pages.participants": "?measure=due",
    "adherence_pages.export_odm": "?study=HEROES",
}
# Requested last: they end the session (or the token) the other requests use.
ENDS_SESSION = {("pages.logout", "POST"), ("auth.TokenView", "DELETE")}


def test_every_endpoint_is_classified(app: Flask) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    classified = set(CARRY_MESSAGES_OR_ALERTS) | OTHER | set(NOT_REQUESTED)
    assert endpoints - classified == set(), "new routes: classify them in this test"
    assert classified - endpoints == set(), "routes gone: remove them from this test"


# --- the scene -----------------------------------------------------------------------------------


@dataclass
class Scene:
    participant: Participant
    alert: Alert
    event: ScheduleEvent
    provider: RecordingProvider
    activation_codes: set[str] = field(default_factory=set)
    survey_tokens: set[str] = field(default_factory=set)
    ack_codes: set[str] = field(default_factory=set)
    # The on-call nurse's secret calendar link: its token and the SHA-256 stored for it.
    calendar_tokens: set[str] = field(default_factory=set)

    def secrets(self) -> dict[str, set[str]]:
        return {
            "activation code": self.activation_codes,
            "survey token": self.survey_tokens,
            "ack code": self.ack_codes,
            "calendar link": self.calendar_tokens | {hash_token(t) for t in self.calendar_tokens},
        }


SIX_DIGITS = re.compile(r"(?<![0-9])[0-9]{6}(?![0-9])")
SURVEY_TOKEN = re.compile(r"/s/([0-9A-Za-z_-]+)")


def _harvest(db: Session, scene: Scene) -> None:
    """Every secret that exists so far, any participant's: in the outbox's clear texts (pending
    rows), in what the provider was given, and the alerts' acknowledgement codes."""
    db.expire_all()
    texts = [(m.kind, m.body) for m in db.exec(select(OutboxMessage))]
    phones = {p.phone_e164 for p in db.exec(select(Participant)) if p.phone_e164}
    texts += [("to a participant", c.body) for c in scene.provider.calls if c.to in phones]
    for kind, text in texts:
        if kind in (MessageKind.ACTIVATION_CODE.value, "to a participant"):
            scene.activation_codes |= set(SIX_DIGITS.findall(text))
        scene.survey_tokens |= set(SURVEY_TOKEN.findall(text))
    scene.ack_codes |= {a.ack_code for a in db.exec(select(Alert))}


def _dispatch(app: Flask, db: Session, scene: Scene) -> None:
    _harvest(db, scene)  # before the outbox forgets them
    with app.app_context():
        build_dispatcher(app, provider=scene.provider, rate_per_second=0).run_once()
    _harvest(db, scene)


@pytest.fixture
def scene(daytime: None, app: Flask, db: Session, world: factories.World) -> Scene:
    for role, phone in CARE_PHONES.items():
        user = world.staff[(role, "A")]
        user.phone_e164, user.is_phone_verified = phone, True
        db.add(user)
    nurse = world.staff[("nurse", "A")]
    membership = db.exec(select(SiteMembership).where(SiteMembership.user_id == nurse.id)).one()
    membership.is_on_call = True
    db.add(membership)
    # Enrolment (now, in the participant's day) queues the welcome and a first activation code.
    participant = factories.make_participant(
        db,
        world.staff[("coordinator", "A")],
        world.sites["A"],
        world.study,  # type: ignore[arg-type]
        STUDY_CODE,
        anchor_date=clock.day("2027-01-04"),
        phone=PHONE,
        has_sms_consent=True,
    )
    db.commit()
    partial = Scene(participant, None, None, RecordingProvider())  # type: ignore[arg-type]
    _dispatch(app, db, partial)

    def open_alert(trigger: str, kind: AlertKind) -> Alert:
        alert, _ = alert_service.open_alert(
            session=db,
            kind=kind,
            trigger_key=trigger,
            participant=participant,
            site_id=world.sites["A"].id,
            summary="needs a look",
            now=clock.utcnow(),
        )
        db.commit()
        return alert

    with time_machine.travel(T, tick=False), app.app_context():
        # The nurse's alert SMS goes out at once; a second (urgent) alert's waits in the outbox.
        alert = open_alert("secrets-test:1", AlertKind.CTDNA_POSITIVE)
        _dispatch(app, db, partial)
        open_alert("secrets-test:2", AlertKind.CTDNA_POSITIVE_BASELINE)
        from server.participants.mobile import send_activation_code

        send_activation_code(session=db, participant=participant, now=clock.utcnow(), actor="test")
        db.commit()
    # The reminder job wrote the questionnaire's reminders ahead of their moment (09:00).
    with time_machine.travel(T - timedelta(hours=12), tick=False), app.app_context():
        reminders.materialize(session=db, now=clock.utcnow(), participant_id=participant.id)
        db.commit()
    event = db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == participant.id, ScheduleEvent.key == "qol:1"
        )
    ).one()
    scene = Scene(participant, alert, event, partial.provider)
    # The nurse subscribed her calendar: the link was shown to her once, here.
    token, _ = oncall.create_calendar_link(session=db, user=nurse, now=clock.utcnow())
    db.commit()
    scene.calendar_tokens.add(token)
    _harvest(db, scene)
    # The scene holds each kind of secret, in clear, in the outbox: otherwise this proves nothing.
    pending = db.exec(
        select(OutboxMessage).where(OutboxMessage.status == MessageStatus.PENDING)
    ).all()
    kinds = {m.kind for m in pending}
    assert {"activation_code", "reminder_questionnaire", "alert_urgent"} <= kinds, kinds
    assert any(alert.ack_code in c.body for c in scene.provider.sent)
    assert scene.activation_codes and scene.survey_tokens and scene.ack_codes
    assert any(a in m.body for m in pending for a in scene.ack_codes)
    assert any(t in m.body for m in pending for t in scene.survey_tokens)
    return scene


# --- requesting every route ----------------------------------------------------------------------


@dataclass
class Answer:
    label: str
    status: int
    body: str
    headers: str

    @property
    def text(self) -> str:
        return f"{self.body}\n{self.headers}"

    def json(self) -> Any:
        return json.loads(self.body)


class Walker:
    """Requests routes as one staff member: the JSON API with a bearer token, pages with a
    logged-in browser session; keeps every answer (body and headers) for the final check."""

    def __init__(self, app: Flask, api: Any, web: Any, scene: Scene, world: factories.World):
        self.app, self.api, self.web, self.scene, self.world = app, api, web, scene, world
        self.answers: list[Answer] = []

    def values(self, endpoint: str) -> dict[str, Any]:
        s = self.scene
        return {
            "participant_id": s.participant.id,
            "message_id": self._message(MessageKind.REMINDER_QUESTIONNAIRE).id,
            "alert_id": s.alert.id,
            "event_id": s.event.id,
            "decision_id": 1,
            "site_id": self.world.sites["A"].id,
            "user_id": self.world.staff[("nurse", "A")].id,
            "key": "HEROES" if endpoint.startswith("schedules.study") else "heroes",
            "resource_type": "Communication",
            "resource_id": str(self._message(MessageKind.REMINDER_QUESTIONNAIRE).id),
            "rest": "Basic/1/_history",
            "layer": "primary",
            "call_id": 1,
            # The nurse's live link: the feed answers (her shifts), and never says the token.
            "token": next(iter(s.calendar_tokens)),
        }

    def _message(self, kind: MessageKind) -> OutboxMessage:
        from server.db import get_db

        with get_db(self.app).session() as session:
            row = session.exec(
                select(OutboxMessage)
                .where(
                    OutboxMessage.participant_id == self.scene.participant.id,
                    OutboxMessage.kind == kind.value,
                )
                .order_by(OutboxMessage.id.desc())  # type: ignore[union-attr]
            ).first()
        assert row is not None, kind
        return row

    def routes(self, *, reads: bool) -> list[tuple[str, str, str]]:
        out = []
        for rule in sorted(self.app.url_map.iter_rules(), key=lambda r: r.rule):
            if rule.endpoint in NOT_REQUESTED:
                continue
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                if (method == "GET") != reads or (rule.endpoint, method) in ENDS_SESSION:
                    continue
                values = self.values(rule.endpoint)
                path = rule.build({a: values[a] for a in rule.arguments}, append_unknown=False)[1]
                out.append((rule.endpoint, method, path + QUERY.get(rule.endpoint, "")))
        return out

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Answer:
        if path.startswith(("/api/", "/fhir/")):
            kw: dict[str, Any] = {"json": body if body is not None else {}}
            if method == "GET":
                resp = self.api.get(path)
            else:
                resp = self.api.client.open(path, method=method, headers=self.api._headers(), **kw)
        elif method == "GET":
            resp = self.web.get(path)
        else:
            data = {**(body or {}), "csrf_token": self.web.csrf}
            resp = self.web.client.open(path, method=method, data=data)
        headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        answer = Answer(f"{method} {path}", resp.status_code, resp.get_data(as_text=True), headers)
        self.answers.append(answer)
        return answer

    def read_everything(self) -> None:
        for _endpoint, method, path in self.routes(reads=True):
            self.call(method, path)

    def write_everything_else(self) -> None:
        """Every other method of every route, with an empty body (most answer 4xx: what they
        say back is checked too)."""
        for _endpoint, method, path in self.routes(reads=False):
            self.call(method, path)

    def act_on_messages_and_alerts(self) -> None:
        """The actions whose answers are a message or an alert, with bodies that succeed when
        the role may act."""
        p = f"/api/v1/participants/{self.scene.participant.id}"
        reason = {"reason": "participant called"}
        for kind in (MessageKind.REMINDER_QUESTIONNAIRE, MessageKind.ACTIVATION_CODE):
            message = self._message(kind)
            self.call("POST", f"{p}/messages/{message.id}/cancel", reason)
            self.call("POST", f"{p}/messages/{message.id}/resend", reason)
        self.call("POST", f"{p}/activation")
        a = self.scene.alert.id
        self.call("POST", f"/api/v1/alerts/{a}/acknowledge", {"note": "seen"})
        self.call("POST", f"/alerts/{a}/acknowledge", {"note": "seen", "next": f"/alerts/{a}"})
        self.call("POST", f"/api/v1/alerts/{a}/resolve", {"note": "called the participant"})
        self.call("POST", f"/alerts/{a}/resolve", {"note": "done", "next": f"/alerts/{a}"})

    def end_sessions(self) -> None:
        self.call("POST", "/logout")
        self.call("DELETE", "/api/v1/auth/token")


def _bounded(secret: str) -> re.Pattern[str]:
    """A numeric code as a number of its own (not inside a longer one); a token anywhere."""
    if secret.isdigit():
        return re.compile(rf"(?<![0-9]){secret}(?![0-9])")
    return re.compile(re.escape(secret))


def _leaks(texts: list[tuple[str, str]], scene: Scene) -> list[str]:
    found = []
    for what, secrets in scene.secrets().items():
        for secret in secrets:
            pattern = _bounded(secret)
            found += [
                f"{what} {secret} in {label}" for label, text in texts if pattern.search(text)
            ]
    return found


@pytest.mark.parametrize("role", [r.value for r in Role])
def test_no_route_shows_a_secret_to_any_staff_role(
    app: Flask, db: Session, world: factories.World, api_as: Any, web_as: Any, scene: Scene, role
):
    with time_machine.travel(T + timedelta(minutes=1), tick=False):
        walker = Walker(app, api_as(role, "A"), web_as(role, "A"), scene, world)
        walker.read_everything()
        # While the secrets are still in the outbox (pending), the staff view shows the kind and
        # the text with markers.
        p = scene.participant.id
        messages = walker.call("GET", f"/api/v1/participants/{p}/messages")
        assert messages.status == 200, messages.text
        shown = {m["kind"]: m["body"] for m in messages.json()}
        assert CODE_HIDDEN in shown["activation_code"], shown
        assert LINK_HIDDEN in shown["reminder_questionnaire"], shown
        page = walker.call("GET", f"/participants/{p}")
        assert page.status == 200
        assert CODE_HIDDEN in page.body and LINK_HIDDEN in page.body
        alert = walker.call("GET", f"/api/v1/alerts/{scene.alert.id}")
        assert alert.status == 200 and "ack_code" not in alert.json()
        assert walker.call("GET", f"/alerts/{scene.alert.id}").status == 200

        walker.act_on_messages_and_alerts()
        _harvest(db, scene)
        walker.write_everything_else()
        walker.read_everything()
        _dispatch(app, db, scene)
        walker.read_everything()
        walker.end_sessions()

    # Each kind of secret went out to its owner's phone, and is nowhere else.
    sent = " ".join(c.body for c in scene.provider.sent)
    assert any(code in sent for code in scene.activation_codes)
    assert any(token in sent for token in scene.survey_tokens)
    assert any(ack in sent for ack in scene.ack_codes)
    # The walk opened the nurse's calendar feed with her live link (and it never said the token).
    feeds = [a for a in walker.answers if a.label.startswith("GET /oncall/feed/")]
    assert any(a.status == 200 and "BEGIN:VCALENDAR" in a.body for a in feeds)
    leaks = _leaks([(a.label, a.text) for a in walker.answers], scene)
    assert leaks == []
    # Nor in any audit row, message trail, or outbox row that has gone (or never will): only
    # messages still waiting for their moment (a notice for the morning) keep their text.
    db.expire_all()
    rows = [("audit", repr(e.model_dump())) for e in db.exec(select(AuditEvent))]
    rows += [("message_log", repr(e.model_dump())) for e in db.exec(select(MessageLog))]
    outbox_rows = db.exec(select(OutboxMessage)).all()
    waiting = [m for m in outbox_rows if m.status in (MessageStatus.PENDING, MessageStatus.SENDING)]
    assert all(
        m.status == MessageStatus.PENDING and m.not_before_at > T + timedelta(minutes=1)
        for m in waiting
    )
    rows += [
        (f"outbox {m.id} {m.kind}", repr(m.model_dump())) for m in outbox_rows if m not in waiting
    ]
    assert len(rows) > len(waiting) + 20
    assert _leaks(rows, scene) == []


# --- after sending -------------------------------------------------------------------------------


def test_the_sent_activation_code_is_gone_from_the_outbox_and_still_activates(
    app: Flask, db: Session, world: factories.World, api_as: Any, client: Any, scene: Scene
):
    with time_machine.travel(T + timedelta(minutes=1), tick=False):
        pending = _pending(db, scene.participant, MessageKind.ACTIVATION_CODE)
        _dispatch(app, db, scene)
        db.expire_all()
        row = db.get(OutboxMessage, pending.id)
        assert row is not None and row.status == MessageStatus.SENT
        # What the participant's phone received (the fake provider keeps it).
        [sms] = [c for c in scene.provider.sent if c.sid == row.provider_sid]
        code = SIX_DIGITS.search(sms.body).group(0)  # type: ignore[union-attr]
        assert sms.to == PHONE and code not in row.body and CODE_HIDDEN in row.body
        rows = db.exec(
            select(OutboxMessage).where(
                OutboxMessage.participant_id == scene.participant.id,
                OutboxMessage.kind == MessageKind.ACTIVATION_CODE.value,
            )
        ).all()
        # The code of enrolment and the one sent at T: both forgotten.
        assert len(rows) == 2 and all(code not in r.body for r in rows)
        assert all(r.status != MessageStatus.PENDING for r in rows)
        # Only the code's hash is stored.
        assert all(code not in repr(a.model_dump()) for a in db.exec(select(ActivationCode)))
        # The staff view says what it was.
        history = api_as("monitor", "A").get(
            f"/api/v1/participants/{scene.participant.id}/messages"
        )
        latest = next(m for m in history.get_json() if m["kind"] == "activation_code")
        assert latest["status"] == "sent" and CODE_HIDDEN in latest["body"]
        assert code not in history.get_data(as_text=True)
        # The participant's phone got the code; it signs the app in.
        r = client.post(
            "/api/v1/mobile/activate",
            json={"study": "HEROES", "study_code": STUDY_CODE, "code": code},
        )
        assert r.status_code == 201, r.get_json()


# --- sending again never re-sends a dead secret ---------------------------------------------------


def _pending(db: Session, participant: Participant, kind: MessageKind) -> OutboxMessage:
    db.expire_all()
    return db.exec(
        select(OutboxMessage)
        .where(
            OutboxMessage.participant_id == participant.id,
            OutboxMessage.kind == kind.value,
            OutboxMessage.status == MessageStatus.PENDING,
        )
        .order_by(OutboxMessage.id.desc())  # type: ignore[union-attr]
    ).first()  # type: ignore[return-value]


def test_resending_an_activation_code_issues_a_new_one(
    app: Flask, db: Session, api_as: Any, client: Any, scene: Scene
):
    p = f"/api/v1/participants/{scene.participant.id}"
    api = api_as("coordinator", "A")
    with time_machine.travel(T + timedelta(minutes=1), tick=False):
        old = _pending(db, scene.participant, MessageKind.ACTIVATION_CODE)
        old_code = SIX_DIGITS.search(old.body).group(0)  # type: ignore[union-attr]
        assert (
            api.post(f"{p}/messages/{old.id}/cancel", json={"reason": "wrong phone"}).status_code
            == 200
        )
        r = api.post(f"{p}/messages/{old.id}/resend", json={"reason": "phone fixed"})
        assert r.status_code == 201, r.get_json()
        answer = r.get_json()
        assert answer["kind"] == "activation_code" and CODE_HIDDEN in answer["body"]
        assert old_code not in r.get_data(as_text=True)
        new = _pending(db, scene.participant, MessageKind.ACTIVATION_CODE)
        assert new.id == answer["id"] != old.id
        new_code = SIX_DIGITS.search(new.body).group(0)  # type: ignore[union-attr]
        assert new_code != old_code and new_code not in r.get_data(as_text=True)
        audit = db.exec(
            select(AuditEvent).where(
                AuditEvent.action == "message.resend", AuditEvent.entity_id == str(new.id)
            )
        ).one()
        assert audit.after["reissued"] == "activation_code"  # type: ignore[index]
        _dispatch(app, db, scene)
        # The old code is dead; the one the phone just received works.
        for code, status in ((old_code, 401), (new_code, 201)):
            activate = client.post(
                "/api/v1/mobile/activate",
                json={"study": "HEROES", "study_code": STUDY_CODE, "code": code},
            )
            assert activate.status_code == status, (code, activate.get_json())


def test_resending_a_questionnaire_reminder_renders_its_link_again_while_the_window_is_open(
    app: Flask, db: Session, api_as: Any, scene: Scene
):
    p = f"/api/v1/participants/{scene.participant.id}"
    api = api_as("nurse", "A")
    with time_machine.travel(T + timedelta(minutes=1), tick=False):
        _dispatch(app, db, scene)
        db.expire_all()
        sent = db.exec(
            select(OutboxMessage).where(
                OutboxMessage.participant_id == scene.participant.id,
                OutboxMessage.kind == MessageKind.REMINDER_QUESTIONNAIRE.value,
            )
        ).first()
        assert sent is not None and sent.status == MessageStatus.SENT
        assert LINK_HIDDEN in sent.body and not SURVEY_TOKEN.search(sent.body)  # forgotten
        # As if the provider reported it undelivered.
        from notifications import outbox

        outbox.advance(db, sent, MessageStatus.UNDELIVERED, source="test", now=clock.utcnow())
        db.commit()
        with app.app_context():
            r = api.post(f"{p}/messages/{sent.id}/resend", json={"reason": "phone was off"})
        assert r.status_code == 201, r.get_json()
        assert LINK_HIDDEN in r.get_json()["body"]
        copy = db.get(OutboxMessage, r.get_json()["id"])
        assert copy is not None and copy.status == MessageStatus.PENDING
        [token] = SURVEY_TOKEN.findall(copy.body)
        assert token not in r.get_data(as_text=True)
        assert copy.expires_at == scene.event.window_close_at
    # Once the window has closed the link would not open: refused, saying why.
    with time_machine.travel(scene.event.window_close_at + timedelta(minutes=1), tick=False):
        late = api_as("nurse", "A").post(f"{p}/messages/{sent.id}/resend", json={"reason": "again"})
    assert late.status_code == 409
    assert "window has closed" in late.get_json()["error"]["message"]


def test_a_staff_notice_about_the_participant_is_never_resent_to_the_participant(
    app: Flask, db: Session, api_as: Any, scene: Scene
):
    from server import messaging

    with time_machine.travel(T + timedelta(minutes=1), tick=False):
        messaging.set_sms_consent(
            session=db,
            participant=scene.participant,
            consent=False,
            now=clock.utcnow(),
            actor="test",
            reason="STOP",
            link="https://stepdown.example.org/",
        )
        scene.participant.has_sms_consent = True  # consent back, the notice stays
        db.add(scene.participant)
        db.commit()
        notice = _pending(db, scene.participant, MessageKind.PARTICIPANT_UNREACHABLE)
        assert notice is not None and notice.staff_user_id is not None
        p = f"/api/v1/participants/{scene.participant.id}"
        api = api_as("coordinator", "A")
        assert api.post(f"{p}/messages/{notice.id}/cancel", json={"reason": "x"}).status_code == 200
        r = api.post(f"{p}/messages/{notice.id}/resend", json={"reason": "again"})
    assert r.status_code == 409
    assert "staff member" in r.get_json()["error"]["message"]
