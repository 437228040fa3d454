"""A new staff alert wakes the dispatcher at once on PostgreSQL (LISTEN/NOTIFY); on SQLite the
dispatcher polls at least every second."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from flask import Flask
from sqlmodel import Session

from notifications import outbox
from notifications.models import PRIORITY_STAFF_ALERT, MessageCategory
from server.db import get_db
from server.messaging import make_waiter


def test_the_dispatcher_wakes_within_a_second_and_at_once_on_postgresql(app: Flask) -> None:
    database = get_db(app)
    stop = threading.Event()
    wait = make_waiter(app, stop)
    woke_after: list[float] = []

    def waiter() -> None:
        started = time.monotonic()
        wait(5.0)
        woke_after.append(time.monotonic() - started)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.1)
    # A staff alert committed by another transaction (a lab's result request, say).
    with Session(database.engine) as session:
        row, _ = outbox.enqueue(
            session,
            dedupe_key="wake:test",
            category=MessageCategory.STAFF_ALERT,
            kind="alert_new",
            to="+33610000001",
            locale="en",
            body="wake",
            now=datetime.now(UTC),
            priority=PRIORITY_STAFF_ALERT,
        )
        session.commit()
        row_id = row.id
    thread.join(timeout=10)
    try:
        assert woke_after, "the waiter never returned"
        if database.is_postgresql:
            assert woke_after[0] < 0.5  # woken by NOTIFY, not by its 5-second timeout
        else:
            assert woke_after[0] <= 1.0  # SQLite: polls at least every second
    finally:
        with Session(database.engine) as session:
            from sqlalchemy import text

            session.execute(text("DELETE FROM message_log WHERE message_id = :i"), {"i": row_id})
            session.execute(text("DELETE FROM outbox_message WHERE id = :i"), {"i": row_id})
            session.commit()
