"""A failure on one message never strands the rest of its batch; stopping hands rows back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

from flask import Flask
from sqlmodel import Session

from notifications import outbox
from notifications.dispatcher import Dispatcher
from notifications.models import PRIORITY_REMINDER, MessageCategory, MessageStatus, OutboxMessage
from notifications.providers import RecordingProvider
from server.db import get_db


def _rows(db: Session, n: int) -> list[OutboxMessage]:
    now = datetime.now(UTC)
    rows = []
    for i in range(n):
        row, _ = outbox.enqueue(
            db,
            dedupe_key=f"batch:{i}",
            category=MessageCategory.REMINDER,
            kind="reminder_visit",
            to=f"+3361234000{i}",
            locale="en",
            body=f"message {i}",
            priority=PRIORITY_REMINDER,
            now=now,
        )
        rows.append(row)
    db.commit()
    return rows


def test_one_broken_message_does_not_strand_the_batch(app: Flask, db: Session) -> None:
    rows = _rows(db, 3)
    recording = RecordingProvider()

    class Flaky:
        def send_sms(self, **kw: Any) -> Any:
            if kw["to"] == rows[1].to_e164:
                raise RuntimeError("a bug while sending this one")
            return recording.send_sms(**kw)

    dispatcher = Dispatcher(
        session_factory=get_db(app).session,
        provider=Flaky(),
        callback_base_url="http://127.0.0.1:8000",
        rate_per_second=0,
    )
    dispatcher.run_once()
    db.expire_all()
    statuses = [db.get(OutboxMessage, r.id).status for r in rows]  # type: ignore[union-attr]
    assert statuses == [MessageStatus.SENT, MessageStatus.SENDING, MessageStatus.SENT]
    assert [s.body for s in recording.sent] == ["message 0", "message 2"]


def test_stopping_mid_batch_gives_the_rest_back(app: Flask, db: Session) -> None:
    rows = _rows(db, 3)
    stop = threading.Event()
    recording = RecordingProvider()

    class StopAfterFirst:
        def send_sms(self, **kw: Any) -> Any:
            stop.set()
            return recording.send_sms(**kw)

    dispatcher = Dispatcher(
        session_factory=get_db(app).session,
        provider=StopAfterFirst(),
        callback_base_url="http://127.0.0.1:8000",
        rate_per_second=0,
    )
    dispatcher.run_once(stop)
    db.expire_all()
    got = [db.get(OutboxMessage, r.id) for r in rows]
    assert [g.status for g in got] == [  # type: ignore[union-attr]
        MessageStatus.SENT,
        MessageStatus.PENDING,
        MessageStatus.PENDING,
    ]
    assert [g.attempts for g in got] == [1, 0, 0]  # type: ignore[union-attr]
