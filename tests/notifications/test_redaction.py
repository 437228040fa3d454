"""Bearer secrets in SMS texts: which parameters are secrets (one table, each one classified),
the redacted copy rendered beside each text, and the outbox forgetting the clear text once the
message has gone (or never will), without losing or doubling a send."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlmodel import Session, select

from notifications import outbox
from notifications.dispatcher import Dispatcher
from notifications.messages import (
    CODE_HIDDEN,
    KIND_SPECS,
    LINK_HIDDEN,
    PLAIN_PARAMS,
    SUPPORTED_LOCALES,
    Audience,
    MessageKind,
    compose,
    render,
    secret_params,
)
from notifications.models import (
    FINAL_STATUSES,
    PRIORITY_PARTICIPANT,
    PRIORITY_STAFF_ALERT,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from notifications.providers import RecordingProvider
from server.clock import utcnow
from server.db import get_db

LINK = "https://stepdown.example.org/s/1a2-6c0ffee-0123456789abcdef"
STAFF_LINK = "https://stepdown.example.org/alerts/42"
ACTIVATION = "583920"
ACK = "417265"


def test_every_parameter_of_every_kind_is_classified_secret_or_plain():
    for kind, spec in KIND_SPECS.items():
        secret = secret_params(kind)
        for param in (*spec.required, *spec.optional):
            if param == "link":
                # A link to a participant opens their questionnaire; a staff link needs a login.
                assert (param in secret) == (spec.audience is Audience.PARTICIPANT), kind
            else:
                assert (param in secret) != (param in PLAIN_PARAMS), (kind, param)


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_activation_code_is_redacted_in_the_copy_only(locale):
    sms = compose(
        MessageKind.ACTIVATION_CODE,
        locale,
        code="A-001",
        activation_code=ACTIVATION,
        minutes_valid=30,
    )
    assert ACTIVATION in sms.text and sms.redacted is not None
    assert ACTIVATION not in sms.redacted and CODE_HIDDEN in sms.redacted
    # The same text otherwise: staff see what the participant got, minus the code.
    assert sms.redacted.replace(CODE_HIDDEN, ACTIVATION) == sms.text
    assert sms.shown == sms.redacted
    assert (
        render(
            MessageKind.ACTIVATION_CODE,
            locale,
            code="A-001",
            activation_code=ACTIVATION,
            minutes_valid=30,
        )
        == sms.text
    )


@pytest.mark.parametrize("locale", SUPPORTED_LOCALES)
def test_survey_link_is_redacted_but_a_staff_link_is_not(locale):
    from datetime import date

    reminder = compose(
        MessageKind.REMINDER_QUESTIONNAIRE,
        locale,
        code="A-001",
        deadline=date(2027, 1, 18),
        link=LINK,
    )
    assert LINK in reminder.text
    assert reminder.redacted is not None and LINK not in reminder.redacted
    assert LINK_HIDDEN in reminder.redacted
    alert = compose(MessageKind.ALERT_NEW, locale, code="A-001", ack_code=ACK, link=STAFF_LINK)
    assert alert.redacted is not None
    assert ACK not in alert.redacted and CODE_HIDDEN in alert.redacted
    assert STAFF_LINK in alert.redacted


def test_a_bundle_hides_every_acknowledgement_code():
    items = [("A-001", "417265"), ("A-002", "902114"), ("B-003", "550183")]
    sms = compose(MessageKind.ALERT_BUNDLE, "en", items=items, link=STAFF_LINK)
    assert sms.redacted is not None
    for code, ack in items:
        assert ack in sms.text and ack not in sms.redacted
        assert code in sms.redacted
    assert sms.redacted.count(CODE_HIDDEN) == len(items)


def test_a_message_without_secrets_has_no_redacted_copy():
    welcome = compose(MessageKind.WELCOME, "fr", code="A-001")
    assert welcome.redacted is None and welcome.shown == welcome.text
    notice = compose(MessageKind.PARTICIPANT_UNREACHABLE, "en", code="A-001", link=STAFF_LINK)
    assert notice.redacted is None


# --- the outbox ----------------------------------------------------------------------------------


def _activation(db: Session, key: str = "activation:test", **kw: Any) -> OutboxMessage:
    row, _ = outbox.enqueue(
        db,
        dedupe_key=key,
        category=MessageCategory.ACTIVATION,
        kind=MessageKind.ACTIVATION_CODE.value,
        to="+33612345601",
        locale="en",
        body=compose(
            MessageKind.ACTIVATION_CODE,
            "en",
            code="A-001",
            activation_code=ACTIVATION,
            minutes_valid=30,
        ),
        priority=PRIORITY_PARTICIPANT,
        now=utcnow(),
        **kw,
    )
    return row


def test_the_outbox_keeps_the_clear_text_only_while_it_may_still_be_sent(db: Session):
    row = _activation(db)
    assert ACTIVATION in row.body and row.redacted_body is not None
    assert ACTIVATION not in outbox.shown_body(row) and CODE_HIDDEN in outbox.shown_body(row)
    # Back to pending or still sending: the dispatcher needs the text.
    for status in (MessageStatus.SENDING,):
        outbox.advance(db, row, status, source="test", now=utcnow())
        assert ACTIVATION in row.body
    outbox.advance(db, row, MessageStatus.SENT, source="test", now=utcnow())
    assert ACTIVATION not in row.body and row.body == row.redacted_body
    db.flush()
    db.expire_all()
    assert ACTIVATION not in db.get(OutboxMessage, row.id).body  # type: ignore[union-attr]


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_every_final_status_scrubs_the_secret(db: Session, status: MessageStatus):
    row = _activation(db, key=f"activation:{status.value}")
    outbox.advance(db, row, status, source="test", now=utcnow())
    db.flush()
    db.expire_all()
    fresh = db.get(OutboxMessage, row.id)
    assert fresh is not None and ACTIVATION not in fresh.body
    assert CODE_HIDDEN in fresh.body


def test_a_secret_kind_given_as_plain_text_is_hidden_whole(db: Session):
    row, _ = outbox.enqueue(
        db,
        dedupe_key="plain:activation",
        category=MessageCategory.ACTIVATION,
        kind=MessageKind.ACTIVATION_CODE.value,
        to="+33612345601",
        locale="en",
        body=f"Your code is {ACTIVATION}",
        priority=PRIORITY_PARTICIPANT,
        now=utcnow(),
    )
    assert row.body == f"Your code is {ACTIVATION}"  # still sent as written
    assert outbox.shown_body(row) == outbox.HIDDEN_TEXT


def _dispatcher(app: Flask, provider: Any, **kw: Any) -> Dispatcher:
    return Dispatcher(
        session_factory=get_db(app).session,
        provider=provider,
        callback_base_url="http://127.0.0.1:8000",
        rate_per_second=0,
        **kw,
    )


def test_the_dispatcher_sends_the_clear_text_and_the_row_keeps_only_the_redacted(
    app: Flask, db: Session
):
    row = _activation(db)
    db.commit()
    provider = RecordingProvider()
    _dispatcher(app, provider).run_once()
    assert [c.body for c in provider.sent] == [row.body]
    assert ACTIVATION in provider.sent[0].body
    db.expire_all()
    fresh = db.get(OutboxMessage, row.id)
    assert fresh is not None and fresh.status == MessageStatus.SENT
    assert ACTIVATION not in fresh.body


def test_a_crash_between_send_and_record_neither_loses_nor_doubles_nor_leaks(
    app: Flask, db: Session
):
    row = _activation(db)
    db.commit()
    provider = RecordingProvider()

    def crash(_: OutboxMessage) -> None:
        raise RuntimeError("killed after the provider accepted the message")

    _dispatcher(app, provider, after_provider_accepted=crash).run_once()
    db.expire_all()
    fresh = db.get(OutboxMessage, row.id)
    assert fresh is not None and fresh.status == MessageStatus.SENDING
    # Not recorded: the text stays, so the reaper can match it against the provider's log.
    assert ACTIVATION in fresh.body
    later = fresh.lease_until_at + timedelta(seconds=1)  # type: ignore[operator]
    reaper = _dispatcher(app, provider, clock=lambda: later)
    stats = reaper.reap()
    assert stats.reconciled == 1
    reaper.run_once()
    assert len(provider.sent) == 1  # found at the provider, not sent again
    db.expire_all()
    fresh = db.get(OutboxMessage, row.id)
    assert fresh is not None and fresh.status == MessageStatus.SENT
    assert ACTIVATION not in fresh.body


def _alert_sms(db: Session, n: int, code: str, ack: str) -> OutboxMessage:
    row, _ = outbox.enqueue(
        db,
        dedupe_key=f"alert:{n}:tier:1:rep:0:staff:1",
        category=MessageCategory.STAFF_ALERT,
        kind=MessageKind.ALERT_NEW.value,
        to="+33610000001",
        locale="en",
        body=compose(MessageKind.ALERT_NEW, "en", code=code, ack_code=ack, link=STAFF_LINK),
        priority=PRIORITY_STAFF_ALERT,
        staff_user_id=None,
        ref=f"alert:{n}",
        now=utcnow(),
    )
    row.bundle_item = {"code": code, "ack": ack}
    db.add(row)
    return row


def test_bundled_alerts_go_out_in_one_sms_and_both_rows_forget_their_codes(app: Flask, db: Session):
    first = _alert_sms(db, 1, "A-001", "417265")
    second = _alert_sms(db, 2, "A-002", "902114")
    db.commit()
    provider = RecordingProvider()
    _dispatcher(app, provider).run_once()
    [sms] = provider.sent
    assert "417265" in sms.body and "902114" in sms.body
    db.expire_all()
    rows = db.exec(select(OutboxMessage).where(OutboxMessage.id.in_([first.id, second.id]))).all()  # type: ignore[union-attr]
    assert {r.status for r in rows} == {MessageStatus.SENT}
    for r in rows:
        text = f"{r.body} {outbox.shown_body(r)} {r.bundle_item}"
        assert "417265" not in text and "902114" not in text
    leader = next(r for r in rows if r.bundled_into_id is None)
    assert leader.kind == MessageKind.ALERT_BUNDLE.value
    assert leader.body.count(CODE_HIDDEN) == 2
