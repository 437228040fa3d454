"""Twilio webhooks through the Flask test client (reliability-security.md checks 7, 8 and 30).

Requests are signed the way Twilio signs them: HMAC-SHA1 with the auth token over the public URL
(app.config["PUBLIC_BASE_URL"] + path and query) and the form parameters, computed with
`notifications.providers.twilio.compute_signature` (the twilio library's RequestValidator).
Everything runs inside the `db` fixture's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, col, select

from notifications import outbox
from notifications.messages import MessageKind
from notifications.models import (
    PRIORITY_REMINDER,
    MessageCategory,
    MessageLog,
    MessageStatus,
    OutboxMessage,
)
from notifications.providers.twilio import SIGNATURE_HEADER, compute_signature
from server.audit import AuditEvent
from server.participants.models import Participant
from tests import factories

SID = "SM" + "a" * 32
OTHER_SID = "SM" + "b" * 32
A1_PHONE = "+33612345678"
STRANGER = "+447700900123"
FAST = 0.5  # seconds; Twilio gives up after 15 s, the target is < 2 s


def public_url(app: Flask, path: str) -> str:
    return str(app.config["PUBLIC_BASE_URL"]) + path


def sign(app: Flask, path: str, params: dict[str, str], *, url: str | None = None) -> str:
    token = app.config["TWILIO_AUTH_TOKEN"]
    return compute_signature(token, url or public_url(app, path), params)


def post(
    client: FlaskClient,
    path: str,
    params: dict[str, str],
    signature: str | None,
    **kw: Any,
) -> Any:
    headers = {} if signature is None else {SIGNATURE_HEADER: signature}
    started = time.perf_counter()
    response = client.post(path, data=params, headers=headers, **kw)
    assert time.perf_counter() - started < FAST
    return response


def post_signed(app: Flask, client: FlaskClient, path: str, params: dict[str, str]) -> Any:
    return post(client, path, params, sign(app, path, params))


def status_params(status: str, *, sid: str = SID, error_code: int | None = None) -> dict[str, str]:
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "From": "+15005550006",
        "To": A1_PHONE,
        "MessageStatus": status,
        "SmsStatus": status,
        "ApiVersion": "2010-04-01",
    }
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    return params


def inbound_params(
    body: str, *, sid: str = SID, from_: str = A1_PHONE, opt_out_type: str | None = None
) -> dict[str, str]:
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": "AC" + "1" * 32,
        "From": from_,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    if opt_out_type is not None:
        params["OptOutType"] = opt_out_type
    return params


@pytest.fixture
def frozen() -> Iterator[Any]:
    # Replies are limited per number per (UTC) day: keep the day fixed.
    with time_machine.travel(datetime(2027, 3, 1, 10, 0, tzinfo=UTC), tick=False) as traveller:
        yield traveller


def in_flight(
    db: Session, *, key: str = "test:webhook:1", participant_id: int | None = None
) -> int:
    """A message the dispatcher handed to Twilio and is waiting to hear about."""
    now = datetime.now(UTC)
    row, _ = outbox.enqueue(
        db,
        dedupe_key=key,
        category=MessageCategory.REMINDER,
        kind=MessageKind.REMINDER_BLOOD_DRAW.value,
        to=A1_PHONE,
        locale="fr",
        body="Stepdown: rappel",
        priority=PRIORITY_REMINDER,
        participant_id=participant_id,
        now=now,
    )
    row.status = MessageStatus.SENDING
    row.attempts = 1
    row.last_attempt_at = now
    row.lease_until_at = now + timedelta(minutes=10)
    db.add(row)
    db.commit()
    assert row.id is not None
    return row.id


def state(db: Session) -> tuple[Any, ...]:
    """Everything a webhook could change."""
    db.expire_all()
    return (
        sorted(
            (m.id, m.status, m.provider_sid, m.error_code, m.sent_at, m.delivered_at)
            for m in db.exec(select(OutboxMessage))
        ),
        db.exec(select(sa.func.count()).select_from(MessageLog)).one(),
        db.exec(select(sa.func.count()).select_from(AuditEvent)).one(),
        sorted(
            (p.id, p.has_sms_consent, p.sms_consent_changed_at)
            for p in db.exec(select(Participant))
        ),
    )


def message(db: Session, message_id: int) -> OutboxMessage:
    db.expire_all()
    row = db.get(OutboxMessage, message_id)
    assert row is not None
    return row


def give_care_team_phones(db: Session, world: factories.World) -> None:
    for (role, site), phone in {
        ("coordinator", "A"): "+33600000001",
        ("nurse", "A"): "+33600000002",
        ("nurse", "B"): "+16175550002",
    }.items():
        staff = world.staff[(role, site)]
        staff.phone_e164 = phone
        staff.is_phone_verified = True
        db.add(staff)
    db.commit()


# --- forged and unsigned webhooks -----------------------------------------------------------


FORGERIES = [
    "unsigned",
    "empty signature",
    "garbage signature",
    "wrong auth token",
    "signed for another URL",
    "parameter changed after signing",
    "signed for the internal URL, not the public one",
    "no auth token configured",
]


@pytest.mark.parametrize("endpoint", ["status", "inbound"])
@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_or_unsigned_webhook_gets_403_and_changes_nothing(
    app: Flask,
    client: FlaskClient,
    db: Session,
    world: factories.World,
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str,
    forgery: str,
) -> None:
    message_id = in_flight(db, participant_id=world.participants["A1"].id)
    if endpoint == "status":
        path, params = f"/twilio/status/{message_id}", status_params("delivered")
    else:
        path, params = "/twilio/inbound", inbound_params("STOP")
    signature: str | None = sign(app, path, params)
    kw: dict[str, Any] = {}
    if forgery == "unsigned":
        signature = None
    elif forgery == "empty signature":
        signature = ""
    elif forgery == "garbage signature":
        signature = "bm90IGEgc2lnbmF0dXJl"
    elif forgery == "wrong auth token":
        signature = compute_signature("someone-elses-token", public_url(app, path), params)
    elif forgery == "signed for another URL":
        other = "/twilio/status/999999" if endpoint == "status" else "/twilio/inbound?x=1"
        signature = sign(app, other, params)
    elif forgery == "parameter changed after signing":
        params = dict(params)
        if endpoint == "status":
            params["MessageStatus"] = params["SmsStatus"] = "failed"
        else:
            params["From"] = "+33699999999"
    elif forgery == "signed for the internal URL, not the public one":
        kw["base_url"] = "http://10.0.0.7:8080"
        signature = sign(app, path, params, url="http://10.0.0.7:8080" + path)
    elif forgery == "no auth token configured":
        monkeypatch.setitem(app.config, "TWILIO_AUTH_TOKEN", None)  # fail closed
    before = state(db)

    response = post(client, path, params, signature, **kw)

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
    assert state(db) == before


# --- status callbacks -----------------------------------------------------------------------


def test_signed_status_callback_moves_the_message_forward(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    message_id = in_flight(db)
    path = f"/twilio/status/{message_id}"

    assert post_signed(app, client, path, status_params("sent")).status_code == 204
    row = message(db, message_id)
    assert (row.status, row.provider_sid) == (MessageStatus.SENT, SID)  # the SID is linked
    assert row.sent_at is not None and row.lease_until_at is None

    assert post_signed(app, client, path, status_params("delivered")).status_code == 204
    row = message(db, message_id)
    assert row.status == MessageStatus.DELIVERED and row.delivered_at is not None
    trail = db.exec(
        select(MessageLog).where(MessageLog.message_id == message_id).order_by(col(MessageLog.id))
    ).all()
    assert [(e.status, e.source) for e in trail] == [
        (MessageStatus.PENDING, "enqueue"),
        (MessageStatus.SENT, "callback"),
        (MessageStatus.DELIVERED, "callback"),
    ]


def test_repeated_and_out_of_order_callbacks_are_harmless(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    message_id = in_flight(db)
    path = f"/twilio/status/{message_id}"
    # "delivered" overtakes "sent" (Twilio does not promise order), then Twilio retries both.
    assert post_signed(app, client, path, status_params("delivered")).status_code == 204
    settled = state(db)
    row = message(db, message_id)
    assert (row.status, row.provider_sid) == (MessageStatus.DELIVERED, SID)
    delivered_at = row.delivered_at

    for late in ("delivered", "sent", "queued", "sending", "delivered", "undelivered"):
        assert post_signed(app, client, path, status_params(late)).status_code == 204
    # A callback about some other send of this row (another SID) is ignored too.
    other = status_params("failed", sid=OTHER_SID, error_code=30008)
    assert post_signed(app, client, path, other).status_code == 204
    # And one for an outbox id we do not have.
    assert (
        post_signed(app, client, "/twilio/status/999999", status_params("failed")).status_code
        == 204
    )

    assert state(db) == settled
    row = message(db, message_id)
    assert (row.status, row.provider_sid, row.delivered_at) == (
        MessageStatus.DELIVERED,
        SID,
        delivered_at,
    )


def test_delivery_failure_is_recorded_with_its_error_code(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    message_id = in_flight(db)
    path = f"/twilio/status/{message_id}"
    post_signed(app, client, path, status_params("sent"))
    response = post_signed(app, client, path, status_params("undelivered", error_code=30003))
    assert response.status_code == 204
    row = message(db, message_id)
    assert (row.status, row.error_code) == (MessageStatus.UNDELIVERED, 30003)
    assert row.failed_at is not None


def test_signature_is_checked_against_the_public_url_not_the_host(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    """Behind a TLS-terminating proxy the app sees http://10.0.0.7:8080; Twilio signed the public
    URL, query string included."""
    message_id = in_flight(db)
    path = f"/twilio/status/{message_id}?attempt=1"
    params = status_params("sent")
    signature = compute_signature(
        app.config["TWILIO_AUTH_TOKEN"], app.config["PUBLIC_BASE_URL"] + path, params
    )
    response = post(client, path, params, signature, base_url="http://10.0.0.7:8080")
    assert response.status_code == 204
    assert message(db, message_id).status == MessageStatus.SENT


# --- inbound SMS ------------------------------------------------------------------------------


def replies(db: Session, kind: MessageKind | None = None) -> list[OutboxMessage]:
    db.expire_all()
    q = select(OutboxMessage).where(OutboxMessage.category == MessageCategory.REPLY)
    if kind is not None:
        q = q.where(OutboxMessage.kind == kind.value)
    return list(db.exec(q.order_by(col(OutboxMessage.id))))


def consent_audit(db: Session, participant_id: int) -> list[AuditEvent]:
    return list(
        db.exec(
            select(AuditEvent)
            .where(
                AuditEvent.action == "participant.sms_consent",
                AuditEvent.entity_id == str(participant_id),
            )
            .order_by(col(AuditEvent.id))
        )
    )


def test_stop_then_start_round_trips_consent(
    app: Flask, client: FlaskClient, db: Session, world: factories.World, frozen: Any
) -> None:
    give_care_team_phones(db, world)
    a1 = world.participants["A1"]
    now = datetime.now(UTC)
    pending: list[int] = []
    for n in range(2):
        row, _ = outbox.enqueue(
            db,
            dedupe_key=f"test:stop:reminder:{n}",
            category=MessageCategory.REMINDER,
            kind=MessageKind.REMINDER_BLOOD_DRAW.value,
            to=A1_PHONE,
            locale="fr",
            body=f"Stepdown: rappel {n}",
            priority=PRIORITY_REMINDER,
            participant_id=a1.id,
            not_before_at=now + timedelta(days=n + 1),
            now=now,
        )
        assert row.id is not None
        pending.append(row.id)
    out = in_flight(db, key="test:stop:in-flight", participant_id=a1.id)
    db.commit()

    response = post_signed(app, client, "/twilio/inbound", inbound_params("Stop", sid="SM01"))
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    db.expire_all()
    assert db.get(Participant, a1.id).has_sms_consent is False  # type: ignore[union-attr]
    [stop] = consent_audit(db, a1.id)  # type: ignore[arg-type]
    assert (stop.actor, stop.before, stop.after) == (
        "participant:sms",
        {"has_sms_consent": True},
        {"has_sms_consent": False},
    )
    # Pending reminders are withdrawn; the one already at Twilio cannot be.
    assert [message(db, i).status for i in pending] == [MessageStatus.OPTED_OUT] * 2
    assert message(db, out).status == MessageStatus.SENDING
    notices = db.exec(
        select(OutboxMessage).where(OutboxMessage.kind == MessageKind.PARTICIPANT_UNREACHABLE.value)
    ).all()
    assert sorted(n.to_e164 for n in notices) == ["+33600000001", "+33600000002"]  # site A only
    assert [r.to_e164 for r in replies(db, MessageKind.OPT_OUT_CONFIRMATION)] == [A1_PHONE]

    # STOP again, and Twilio retrying the first one: nothing new for the care team or the audit.
    post_signed(app, client, "/twilio/inbound", inbound_params("STOP", sid="SM02"))
    post_signed(app, client, "/twilio/inbound", inbound_params("Stop", sid="SM01"))
    db.expire_all()
    assert len(consent_audit(db, a1.id)) == 1  # type: ignore[arg-type]
    assert len(
        db.exec(
            select(OutboxMessage).where(
                OutboxMessage.kind == MessageKind.PARTICIPANT_UNREACHABLE.value
            )
        ).all()
    ) == len(notices)

    response = post_signed(app, client, "/twilio/inbound", inbound_params("start", sid="SM03"))
    assert response.status_code == 200
    db.expire_all()
    assert db.get(Participant, a1.id).has_sms_consent is True  # type: ignore[union-attr]
    events = consent_audit(db, a1.id)  # type: ignore[arg-type]
    assert [(e.before, e.after) for e in events] == [
        ({"has_sms_consent": True}, {"has_sms_consent": False}),
        ({"has_sms_consent": False}, {"has_sms_consent": True}),
    ]
    assert [r.to_e164 for r in replies(db, MessageKind.OPT_IN_CONFIRMATION)] == [A1_PHONE]


def test_with_twilio_opt_out_handling_we_send_no_confirmation_of_our_own(
    app: Flask, client: FlaskClient, db: Session, world: factories.World, frozen: Any
) -> None:
    a1 = world.participants["A1"]
    before = len(replies(db))
    for sid, body, kind, consent in (
        ("SM11", "STOP", "STOP", False),
        ("SM12", "HELP", "HELP", False),
        ("SM13", "START", "START", True),
    ):
        response = post_signed(
            app, client, "/twilio/inbound", inbound_params(body, sid=sid, opt_out_type=kind)
        )
        assert response.status_code == 200
        db.expire_all()
        assert db.get(Participant, a1.id).has_sms_consent is consent  # type: ignore[union-attr]
    assert len(replies(db)) == before  # Twilio already answered each of them
    assert len(consent_audit(db, a1.id)) == 2  # type: ignore[arg-type]


def test_a_number_nobody_owns_stores_nothing_and_gets_one_generic_reply_a_day(
    app: Flask, client: FlaskClient, db: Session, world: factories.World, frozen: Any
) -> None:
    participants = state(db)[3]
    audit_count = state(db)[2]
    texts = ["Bonjour, mes résultats ?", "allo ??", "STOP", "HELP"]
    for n, text in enumerate(texts):
        response = post_signed(
            app, client, "/twilio/inbound", inbound_params(text, sid=f"SM2{n}", from_=STRANGER)
        )
        assert response.status_code == 200
    snapshot = state(db)
    assert snapshot[3] == participants  # nobody's consent changed
    assert snapshot[2] == audit_count
    [reply] = replies(db)
    assert (reply.to_e164, reply.kind, reply.participant_id) == (
        STRANGER,
        MessageKind.UNKNOWN_SENDER.value,
        None,
    )
    assert not any(text.lower() in reply.body.lower() for text in texts[:2])
    assert not db.exec(
        select(OutboxMessage).where(col(OutboxMessage.body).contains("résultats"))
    ).all()

    frozen.shift(timedelta(days=1))
    post_signed(
        app, client, "/twilio/inbound", inbound_params("allo ?", sid="SM30", from_=STRANGER)
    )
    assert [r.to_e164 for r in replies(db)] == [STRANGER, STRANGER]  # a new day, one more
