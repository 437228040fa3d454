"""Alerts for the care team, their escalation and their timeline."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow
from server.db import str_enum


class AlertKind(enum.StrEnum):
    CTDNA_POSITIVE = "ctdna_positive"
    CTDNA_POSITIVE_BASELINE = "ctdna_positive_baseline"
    PROGRESSION = "progression"
    REDRAW_NEEDED = "redraw_needed"
    RESULT_OVERDUE = "result_overdue"
    MISSED_WINDOW = "missed_window"
    # The entry gate decided (continues maintenance) or waits for the stop date: a task.
    ENTRY_GATE = "entry_gate"
    CRITICAL_ANSWER = "critical_answer"
    DEAD_ROUTE = "dead_route"
    OPERATOR = "operator"


class Level(enum.StrEnum):
    """How soon a person must act, which decides how the alert reaches them (see
    server/alerts/rules.py): critical (now, day or night, reply ACK, escalates), urgent (today:
    held at night, reply ACK, escalates), routine (a task in the morning digest: no reply, no
    escalation)."""

    CRITICAL = "critical"
    URGENT = "urgent"
    ROUTINE = "routine"


class AlertState(enum.StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(SQLModel, table=True):
    """One alert per trigger (a result, a missed event, an answer): unique on trigger_key."""

    __tablename__ = "alert"
    __table_args__ = (
        # The escalation job's query: open alerts whose next tier is due.
        sa.Index("ix_alert_due", "state", "next_tier_at"),
        sa.Index("ix_alert_site_state", "site_id", "state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    trigger_key: str = Field(max_length=120, unique=True)
    kind: AlertKind = Field(sa_type=str_enum(AlertKind))
    # Fixed when the alert opens (site policy, else the protocol, else the kind's default).
    level: Level = Field(sa_type=str_enum(Level))
    state: AlertState = Field(default=AlertState.OPEN, sa_type=str_enum(AlertState))
    participant_id: int | None = Field(default=None, foreign_key="participant.id", index=True)
    site_id: int | None = Field(default=None, foreign_key="site.id")
    result_id: int | None = Field(default=None, foreign_key="lab_result.id")
    event_id: int | None = Field(default=None, foreign_key="schedule_event.id")
    # The 6 digits staff reply with ("ACK 482113"), counted only from a phone they were sent to;
    # unique among open alerts (alerts opened before the upgrade keep their 4 digits).
    ack_code: str = Field(max_length=8, index=True)
    summary: str = Field(max_length=300)
    # Escalation state: the tier last notified, when the next one is due (None: no more).
    tier: int = Field(default=0)
    next_tier_at: datetime | None = Field(default=None)
    repeats_done: int = Field(default=0)
    policy: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    opened_at: datetime = Field(default_factory=utcnow)
    acknowledged_at: datetime | None = Field(default=None)
    acknowledged_by_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    ack_channel: str | None = Field(default=None, max_length=16)
    resolved_at: datetime | None = Field(default=None)
    resolved_by_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    resolution_note: str | None = Field(default=None, max_length=2000)
    # When the site's fail-safe was called on (every tier unanswered): set once, never again.
    failsafe_at: datetime | None = Field(default=None)


class AlertLog(SQLModel, table=True):
    """The alert's timeline: opened, each tier notified, delivery failures, ack, resolution."""

    __tablename__ = "alert_log"

    id: int | None = Field(default=None, primary_key=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    at: datetime = Field(default_factory=utcnow)
    what: str = Field(max_length=48)
    tier: int | None = Field(default=None)
    actor: str | None = Field(default=None, max_length=100)
    detail: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)


class VoiceCall(SQLModel, table=True):
    """A phone call of an alert's tier (issue 16 item 2): placed through Twilio Programmable
    Voice, it speaks the participant's code and gathers a keypad press; 1 acknowledges. No answer,
    busy, voicemail or a failed call move the alert on like an undelivered SMS."""

    __tablename__ = "voice_call"
    __table_args__ = (sa.Index("ix_voice_call_due", "status", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    dedupe_key: str = Field(max_length=120, unique=True)
    alert_id: int = Field(foreign_key="alert.id", index=True)
    staff_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    to_e164: str = Field(max_length=20)
    locale: str = Field(max_length=8)
    tier: int
    # queued -> calling -> acknowledged | answered | no_answer | busy | voicemail | failed;
    # canceled when the alert was acknowledged before the call was placed.
    status: str = Field(default="queued", max_length=16)
    due_at: datetime
    call_sid: str | None = Field(default=None, max_length=64)
    placed_at: datetime | None = Field(default=None)
    ended_at: datetime | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow)
