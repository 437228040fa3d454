"""FHIR Subscriptions (R4 Backport, rest-hook): a site's endpoints and their notifications.

Notifications are rows, like SMS in the outbox, but in a lane of their own: a webhook that hangs
or fails only ever delays other webhooks, never a nurse's SMS (server/fhir/subscriptions.py).
"""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow
from server.db import str_enum


class SubscriptionStatus(enum.StrEnum):
    """Backport subscription states: requested until the handshake succeeds."""

    REQUESTED = "requested"
    ACTIVE = "active"
    ERROR = "error"
    OFF = "off"


class Topic(enum.StrEnum):
    """What a site may subscribe to."""

    ALERT = "alert"  # an alert opened about a participant (focus: the Flag)
    RESULT = "result"  # a result accepted for a participant (focus: the Observation)


class PayloadContent(enum.StrEnum):
    ID_ONLY = "id-only"
    EMPTY = "empty"


class NotificationType(enum.StrEnum):
    HANDSHAKE = "handshake"
    HEARTBEAT = "heartbeat"
    EVENT = "event-notification"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after the last retry
    CANCELLED = "cancelled"  # the subscription was deleted first


class FhirSubscription(SQLModel, table=True):
    """A site's rest-hook endpoint for one topic; the signing secret is shown once, at creation."""

    __tablename__ = "fhir_subscription"

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    topic: Topic = Field(sa_type=str_enum(Topic))
    endpoint: str = Field(max_length=500)
    # HMAC-SHA256 key of the X-Stepdown-Signature header (the receiver holds the same).
    secret: str = Field(max_length=64)
    payload: PayloadContent = Field(
        default=PayloadContent.ID_ONLY, sa_type=str_enum(PayloadContent)
    )
    heartbeat_seconds: int | None = Field(default=None)
    reason: str | None = Field(default=None, max_length=200)
    status: SubscriptionStatus = Field(
        default=SubscriptionStatus.REQUESTED, sa_type=str_enum(SubscriptionStatus)
    )
    # Event notifications queued so far (their event-number), as the Backport counts them.
    events_since_start: int = Field(default=0)
    # Delivery health: the status page of a subscription ($status) shows these.
    failure_count: int = Field(default=0)
    last_error: str | None = Field(default=None, max_length=300)
    last_failure_at: datetime | None = Field(default=None)
    last_delivered_at: datetime | None = Field(default=None)
    created_by_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = Field(default=None)


class FhirNotification(SQLModel, table=True):
    """One notification to deliver (handshake, heartbeat or event), retried with backoff."""

    __tablename__ = "fhir_notification"
    __table_args__ = (
        # One notification per subscription and focus: queuing the same event twice is refused.
        sa.UniqueConstraint("subscription_id", "focus", name="uq_fhir_notification_focus"),
        sa.Index("ix_fhir_notification_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: int = Field(foreign_key="fhir_subscription.id", index=True)
    kind: NotificationType = Field(sa_type=str_enum(NotificationType))
    event_number: int = Field(default=0)
    # e.g. "Flag/12", "Observation/result-40"; None for handshakes and heartbeats.
    focus: str | None = Field(default=None, max_length=120)
    event_at: datetime
    status: DeliveryStatus = Field(default=DeliveryStatus.PENDING, sa_type=str_enum(DeliveryStatus))
    attempts: int = Field(default=0)
    next_attempt_at: datetime
    last_status_code: int | None = Field(default=None)
    last_error: str | None = Field(default=None, max_length=300)
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = Field(default=None)
