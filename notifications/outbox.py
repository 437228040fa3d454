"""Outbox operations: enqueue (idempotent on the dedupe key), status changes that only move
forward, cancellation by reference, and the message log.

A message that carries a bearer secret (see `notifications.messages.secret_params`) is stored with
a redacted copy of its text; staff only ever see `shown_body`. The clear text is needed until the
provider has the message (the dispatcher sends it; the reaper matches it against the provider's
log while the row is `sending`), then it is overwritten with the redacted copy in the same
transaction that moves the row out of pending/sending (`advance`): a crash before that commit
leaves the row `sending` with its text, which the callback or the reaper settle as before."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from notifications.messages import CODE_HIDDEN, MessageKind, Sms, secret_params
from notifications.models import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    PRIORITY_STAFF_NOTICE,
    MessageCategory,
    MessageLog,
    MessageStatus,
    OutboxMessage,
)
from notifications.segments import count_segments

WAKE_CHANNEL = "stepdown_outbox"

# Forward-only order of delivery states; callbacks arrive unordered and repeated.
RANK = {
    MessageStatus.PENDING: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.UNDELIVERED: 3,
    MessageStatus.FAILED: 3,
    MessageStatus.EXPIRED: 3,
    MessageStatus.CANCELLED: 3,
    MessageStatus.OPTED_OUT: 3,
}

# Twilio's statuses in our terms: anything Twilio holds is "sent" (handed to the provider).
TWILIO_STATUS = {
    "accepted": MessageStatus.SENT,
    "scheduled": MessageStatus.SENT,
    "queued": MessageStatus.SENT,
    "sending": MessageStatus.SENT,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.CANCELLED,
}


# Whole-text stand-in for a message of a secret-bearing kind given as a plain string (not
# rendered by `compose`, so where its secrets sit is unknown): fail closed, hide it all.
HIDDEN_TEXT = "[text hidden: it carried a code or a link]"


def _texts(kind: str, body: str | Sms) -> tuple[str, str | None]:
    """(text to send, redacted copy or None) of a message about to be queued."""
    if isinstance(body, Sms):
        return body.text, body.redacted
    try:
        has_secrets = bool(secret_params(MessageKind(kind)))
    except ValueError:  # not a kind of ours (tests, tools): nothing known to hide
        has_secrets = False
    return body, HIDDEN_TEXT if has_secrets else None


def shown_body(message: OutboxMessage) -> str:
    """The text of a message as anyone but its recipient may see it: secrets replaced by
    markers ("[code hidden]", "[link hidden]")."""
    return message.body if message.redacted_body is None else message.redacted_body


def scrub(message: OutboxMessage) -> None:
    """Drop the message's secrets for good (it has gone, or never will): the clear text becomes
    the redacted one, and a bundled alert forgets its acknowledgement code."""
    if message.redacted_body is not None and message.body != message.redacted_body:
        message.body = message.redacted_body
    item = message.bundle_item
    # (a task's ack is empty: there is no code to hide)
    if item and item.get("ack") not in (None, "", CODE_HIDDEN):
        message.bundle_item = {**item, "ack": CODE_HIDDEN}


_TABLE: sa.Table = OutboxMessage.__table__  # type: ignore[attr-defined]


def _insert(session: Session) -> Any:
    # A Core INSERT on the table: the ORM's per-call work on an entity INSERT (a millisecond,
    # more than the statement itself) would be paid by every reminder a busy job tick writes.
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(_TABLE)


def enqueue(
    session: Session,
    *,
    dedupe_key: str,
    category: MessageCategory,
    kind: str,
    to: str,
    locale: str,
    body: str | Sms,
    priority: int,
    now: datetime,
    not_before_at: datetime | None = None,
    intended_at: datetime | None = None,
    expires_at: datetime | None = None,
    participant_id: int | None = None,
    staff_user_id: int | None = None,
    ref: str | None = None,
    sender: str | None = None,
) -> tuple[OutboxMessage, bool]:
    """Write a message row in the caller's transaction; (row, created). A second enqueue with the
    same dedupe key returns the first row: one key, one message, ever. Give `body` as the `Sms`
    that `messages.compose` made, so that staff see its redacted copy."""
    due = not_before_at or now
    text, redacted = _texts(kind, body)
    values = {
        "dedupe_key": dedupe_key,
        "category": category,
        "kind": kind,
        "to_e164": to,
        "locale": locale,
        "body": text,
        "redacted_body": redacted,
        "segments": count_segments(text).segments,
        "priority": priority,
        "intended_at": intended_at or due,
        "not_before_at": due,
        "expires_at": expires_at,
        "participant_id": participant_id,
        "staff_user_id": staff_user_id,
        "ref": ref,
        "sender": sender,
        "status": MessageStatus.PENDING,
        "created_at": now,
        "updated_at": now,
    }
    # RETURNING tells whether this call inserted the row: the ORM-enabled INSERT's rowcount is -1
    # on PostgreSQL (psycopg), which made every new message look like a duplicate there.
    stmt = (
        _insert(session)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(_TABLE.c.id)
    )
    created = session.execute(stmt).scalar_one_or_none() is not None
    row = session.exec(select(OutboxMessage).where(OutboxMessage.dedupe_key == dedupe_key)).one()
    if created:
        log(session, row, MessageStatus.PENDING, "enqueue", at=now)
        if priority <= PRIORITY_STAFF_NOTICE and due <= now:
            wake(session)
    return row, created


def enqueue_many(
    session: Session, messages: Iterable[dict[str, Any]], *, now: datetime
) -> dict[str, int]:
    """Write many message rows as `enqueue` writes one (each dict holds `enqueue`'s keyword
    arguments but the session and `now`), in one INSERT and one INSERT of their trail: the
    reminder job's busy tick pays two statements, not three per row. {dedupe key: id} of the
    rows created; a key already in the outbox is skipped, as by `enqueue`."""
    rows = []
    for m in messages:
        due = m.get("not_before_at") or now
        text, redacted = _texts(m["kind"], m["body"])
        rows.append(
            {
                "dedupe_key": m["dedupe_key"],
                "category": m["category"],
                "kind": m["kind"],
                "to_e164": m["to"],
                "locale": m["locale"],
                "body": text,
                "redacted_body": redacted,
                "segments": count_segments(text).segments,
                "priority": m["priority"],
                "intended_at": m.get("intended_at") or due,
                "not_before_at": due,
                "expires_at": m.get("expires_at"),
                "participant_id": m.get("participant_id"),
                "staff_user_id": m.get("staff_user_id"),
                "ref": m.get("ref"),
                "sender": m.get("sender"),
                "status": MessageStatus.PENDING,
                "created_at": now,
                "updated_at": now,
            }
        )
    if not rows:
        return {}
    stmt = (
        _insert(session)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(_TABLE.c.id, _TABLE.c.dedupe_key)
    )
    created = {key: ident for ident, key in session.execute(stmt, rows).all()}
    if created:
        session.execute(
            sa.insert(MessageLog),
            [
                {
                    "message_id": ident,
                    "at": now,
                    "status": MessageStatus.PENDING,
                    "source": "enqueue",
                }
                for ident in created.values()
            ],
        )
        if any(
            r["priority"] <= PRIORITY_STAFF_NOTICE and r["not_before_at"] <= now
            for r in rows
            if r["dedupe_key"] in created
        ):
            wake(session)
    return created


def wake(session: Session) -> None:
    """Wake dispatchers at commit (PostgreSQL NOTIFY; SQLite dispatchers poll)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_notify(:c, '')"), {"c": WAKE_CHANNEL})


def log(
    session: Session,
    message: OutboxMessage,
    status: MessageStatus,
    source: str,
    *,
    at: datetime,
    error_code: int | None = None,
    note: str | None = None,
    dedupe_key: str | None = None,
) -> None:
    """Append to the message's trail."""
    session.add(
        MessageLog(
            message_id=message.id,  # type: ignore[arg-type]
            at=at,
            status=status,
            source=source,
            error_code=error_code,
            note=note,
            dedupe_key=dedupe_key,
        )
    )


def advance(
    session: Session,
    message: OutboxMessage,
    status: MessageStatus,
    *,
    source: str,
    now: datetime,
    error_code: int | None = None,
    note: str | None = None,
) -> bool:
    """Move a message forward (never back, never out of a final state); True if it moved."""
    if message.status in FINAL_STATUSES or status == message.status:
        return False
    if RANK[status] < RANK[message.status]:
        return False  # e.g. a late "sent" after "delivered"
    message.status = status
    message.updated_at = now
    if error_code is not None:
        message.error_code = error_code
    if note is not None:
        message.status_note = note[:300]
    if status == MessageStatus.SENT and message.sent_at is None:
        message.sent_at = now
    elif status == MessageStatus.DELIVERED:
        message.delivered_at = now
        message.sent_at = message.sent_at or now
    elif status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED):
        message.failed_at = now
    if status not in OPEN_STATUSES:
        message.lease_until_at = None
        scrub(message)
    session.add(message)
    log(session, message, status, source, at=now, error_code=error_code, note=note)
    if RANK[status] >= RANK[MessageStatus.SENT] and status != MessageStatus.CANCELLED:
        # Alerts carried by this SMS (a bundle) share its fate.
        for follower in followers(session, message):
            advance(
                session,
                follower,
                status,
                source=f"bundle:{message.id}",
                now=now,
                error_code=error_code,
            )
    return True


def followers(session: Session, leader: OutboxMessage) -> list[OutboxMessage]:
    """The rows whose text went out inside this bundle SMS."""
    if leader.id is None or leader.category != MessageCategory.STAFF_ALERT:
        return []
    return list(
        session.exec(select(OutboxMessage).where(OutboxMessage.bundled_into_id == leader.id)).all()
    )


def release_followers(session: Session, leader: OutboxMessage, now: datetime) -> None:
    """A bundle SMS that must be retried gives its other alerts back to the queue."""
    for row in followers(session, leader):
        if row.status != MessageStatus.SENDING:
            continue
        row.status = MessageStatus.PENDING
        row.bundled_into_id = None
        row.attempts = max(0, row.attempts - 1)
        row.lease_until_at = None
        row.updated_at = now
        session.add(row)
        log(
            session,
            row,
            MessageStatus.PENDING,
            "dispatcher",
            at=now,
            note=f"bundle {leader.id} is retried; waits for the next one",
        )


def cancel_where(
    session: Session,
    *,
    now: datetime,
    reason: str,
    refs: Iterable[str] | None = None,
    participant_id: int | None = None,
    status: MessageStatus = MessageStatus.CANCELLED,
    categories: Iterable[MessageCategory] | None = None,
) -> int:
    """Cancel pending messages by reference or participant (sending ones are already out)."""
    q = select(OutboxMessage).where(OutboxMessage.status == MessageStatus.PENDING)
    if refs is not None:
        refs = list(refs)
        if not refs:
            return 0
        q = q.where(col(OutboxMessage.ref).in_(refs))
    if participant_id is not None:
        q = q.where(OutboxMessage.participant_id == participant_id)
    if categories is not None:
        q = q.where(col(OutboxMessage.category).in_(list(categories)))
    count = 0
    for message in session.exec(q):
        if advance(session, message, status, source="cancel", now=now, note=reason):
            count += 1
    return count


def apply_callback(
    session: Session,
    *,
    message_id: int,
    sid: str | None,
    provider_status: str,
    error_code: int | None,
    now: datetime,
) -> OutboxMessage | None:
    """A provider status callback: links the SID (even after a crash before our own commit) and
    moves the status forward. Repeated or out-of-order callbacks change nothing."""
    message = session.exec(
        select(OutboxMessage).where(OutboxMessage.id == message_id).with_for_update()
    ).first()
    if message is None:
        return None
    if sid and message.provider_sid is None:
        message.provider_sid = sid
        session.add(message)
    elif sid and message.provider_sid != sid:
        return message  # a callback for some other send of this row: ignore it
    status = TWILIO_STATUS.get(provider_status.lower())
    if status is None:
        return message
    if message.status == MessageStatus.SENDING and RANK[status] >= RANK[MessageStatus.SENT]:
        message.sent_at = message.sent_at or now
    advance(session, message, status, source="callback", now=now, error_code=error_code)
    return message
