"""The outbox: every message is a row written in the transaction that caused it.

notifications/ knows recipients, templates and delivery states, never clinical data: a row holds a
phone number, a rendered body (which by construction carries no health information), and opaque
references (`participant_id`, `ref`) the domain uses to cancel or find its messages.
"""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from notifications.sqltypes import str_enum, utcnow


class MessageStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    OPTED_OUT = "opted_out"


class MessageCategory(enum.StrEnum):
    REMINDER = "reminder"
    WELCOME = "welcome"
    ACTIVATION = "activation"
    STAFF_ALERT = "staff_alert"
    STAFF_NOTICE = "staff_notice"
    DIGEST = "digest"
    REPLY = "reply"


# Lower sends first: staff alerts before everything, reminders last.
PRIORITY_STAFF_ALERT = 0
PRIORITY_STAFF_NOTICE = 10
PRIORITY_PARTICIPANT = 20
PRIORITY_REMINDER = 50

# Statuses a message can still leave; the others are final.
OPEN_STATUSES = (MessageStatus.PENDING, MessageStatus.SENDING)
FINAL_STATUSES = frozenset(
    {
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
        MessageStatus.FAILED,
        MessageStatus.EXPIRED,
        MessageStatus.CANCELLED,
        MessageStatus.OPTED_OUT,
    }
)


class OutboxMessage(SQLModel, table=True):
    """One intended SMS and what became of it."""

    __tablename__ = "outbox_message"
    __table_args__ = (
        # The dispatcher's claim: pending rows that are due, most urgent first.
        sa.Index("ix_outbox_due", "status", "not_before_at", "priority"),
        # The claim's ORDER BY: PostgreSQL walks it in order and stops at the batch size, so a
        # large due backlog (after an outage) is not read and sorted whole on every claim.
        sa.Index("ix_outbox_claim_order", "status", "priority", "not_before_at", "id"),
        sa.Index("ix_outbox_participant", "participant_id", "created_at"),
        sa.Index("ix_outbox_ref", "ref"),
        sa.Index("ix_outbox_lease", "status", "lease_until_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    # One key per intended message: a second insert of the same intent is refused.
    dedupe_key: str = Field(max_length=200, unique=True)
    category: MessageCategory = Field(sa_type=str_enum(MessageCategory))
    kind: str = Field(max_length=48)
    participant_id: int | None = Field(default=None, foreign_key="participant.id")
    staff_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    ref: str | None = Field(default=None, max_length=64)
    to_e164: str = Field(max_length=20)
    sender: str | None = Field(default=None, max_length=40)
    locale: str = Field(max_length=8)
    # What goes to the recipient. When it carries a bearer secret (an activation code, a survey
    # link, an acknowledgement code), `redacted_body` holds the same text with each secret
    # replaced by a marker, and `body` is overwritten with it once the message leaves
    # pending/sending: the provider has it, or it will never go. None: nothing to hide.
    body: str = Field(max_length=1600)
    redacted_body: str | None = Field(default=None, max_length=1600)
    segments: int = Field(default=1)
    priority: int = Field(default=PRIORITY_REMINDER)
    intended_at: datetime
    not_before_at: datetime
    expires_at: datetime | None = Field(default=None)
    status: MessageStatus = Field(default=MessageStatus.PENDING, sa_type=str_enum(MessageStatus))
    provider_sid: str | None = Field(default=None, max_length=64, unique=True)
    error_code: int | None = Field(default=None)
    attempts: int = Field(default=0)
    lease_until_at: datetime | None = Field(default=None)
    last_attempt_at: datetime | None = Field(default=None)
    sent_at: datetime | None = Field(default=None)
    delivered_at: datetime | None = Field(default=None)
    failed_at: datetime | None = Field(default=None)
    status_note: str | None = Field(default=None, max_length=300)
    # Staff alerts: {"code", "ack"} so the dispatcher can bundle several into one SMS.
    bundle_item: dict[str, str] | None = Field(default=None, sa_type=sa.JSON)
    bundled_into_id: int | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class MessageLog(SQLModel, table=True):
    """Every state change of a message, with its source: the intended → sent → delivered trail."""

    __tablename__ = "message_log"

    id: int | None = Field(default=None, primary_key=True)
    message_id: int = Field(foreign_key="outbox_message.id", index=True, ondelete="CASCADE")
    at: datetime = Field(default_factory=utcnow)
    status: MessageStatus = Field(sa_type=str_enum(MessageStatus))
    source: str = Field(max_length=32)
    error_code: int | None = Field(default=None)
    note: str | None = Field(default=None, max_length=300)
    # Twilio retries webhooks; the same (sid, status) twice is recorded once.
    dedupe_key: str | None = Field(default=None, max_length=120, unique=True)


class SmsSenderRate(SQLModel, table=True):
    """The send slots of one sender, shared by every dispatcher on PostgreSQL
    (notifications/ratelimit.py): times are seconds on the database server's clock."""

    __tablename__ = "sms_sender_rate"

    sender: str = Field(primary_key=True, max_length=40)
    # The earliest moment the sender's next send may start.
    tat: float = Field(default=0.0)
    # Until then the next slot is kept for a staff alert that asked for it.
    hold_until: float = Field(default=0.0)
