"""A participant's planned events (draws, scans, visits, questionnaires) and decisions."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow
from server.db import str_enum
from server.protocols.definition import EventType


class EventStatus(enum.StrEnum):
    PLANNED = "planned"
    OPEN = "open"
    COMPLETED = "completed"
    MISSED = "missed"
    CANCELLED = "cancelled"
    NOT_APPLICABLE = "not_applicable"


# Events whose outcome is still ahead: the only ones a re-plan may move or end.
PENDING_STATUSES = (EventStatus.PLANNED, EventStatus.OPEN)


class ScheduleEvent(SQLModel, table=True):
    """One planned occurrence with its window; dates are local to the participant, times UTC."""

    __tablename__ = "schedule_event"
    __table_args__ = (
        sa.UniqueConstraint("participant_id", "key", name="uq_schedule_event_key"),
        # The jobs look for windows to open and to close: status first, then time.
        sa.Index("ix_schedule_event_status_open", "status", "window_open_at"),
        sa.Index("ix_schedule_event_status_close", "status", "window_close_at"),
        sa.Index("ix_schedule_event_participant_target", "participant_id", "target_at"),
        # A page of participants' next pending events (the participants list).
        sa.Index(
            "ix_schedule_event_participant_status_close",
            "participant_id",
            "status",
            "window_close_at",
        ),
        # Draws and scans done lately that may await a result (Today, the results watchdog).
        sa.Index("ix_schedule_event_status_completed", "status", "completed_on"),
        # The reminder job reads only the pending events whose next reminder has come.
        sa.Index("ix_schedule_event_status_next_reminder", "status", "next_reminder_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", ondelete="CASCADE")
    key: str = Field(max_length=80)
    item_id: str = Field(max_length=64)
    sequence: int
    event_type: EventType = Field(sa_type=str_enum(EventType))
    modality: str | None = Field(default=None, max_length=32)
    instrument: str | None = Field(default=None, max_length=64)
    regimen: str | None = Field(default=None, max_length=64)
    label: str = Field(max_length=200)
    phase: str | None = Field(default=None, max_length=64)
    protocol_version: str = Field(max_length=32)
    target_date: date
    window_open_date: date
    window_close_date: date
    target_at: datetime
    window_open_at: datetime
    window_close_at: datetime
    expects_result: str | None = Field(default=None, max_length=32)
    result_turnaround_days: int | None = Field(default=None)
    is_reanchoring: bool = Field(default=False)
    status: EventStatus = Field(default=EventStatus.PLANNED, sa_type=str_enum(EventStatus))
    completed_on: date | None = Field(default=None)
    completed_at: datetime | None = Field(default=None)
    is_out_of_window: bool = Field(default=False)
    # Set when staff moved or annotated an event by hand: amendments leave it alone.
    is_touched: bool = Field(default=False)
    status_reason: str | None = Field(default=None, max_length=500)
    # What the completion recorded that rules read (e.g. {"ctdna": "negative"}, {"recist": "PR"}).
    outcome: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    # The send moment of the event's next reminder not yet in the outbox (server/schedules/
    # reminders.py): the reminder job looks at the event once it falls within its horizon. None:
    # nothing left to write until the event or the participant changes. A new event is due at once.
    next_reminder_at: datetime | None = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class DecisionStatus(enum.StrEnum):
    DUE = "due"
    DECIDED = "decided"
    CANCELLED = "cancelled"


class Decision(SQLModel, table=True):
    """A protocol decision point: the rule's recommendation and the care team's choice."""

    __tablename__ = "decision"
    __table_args__ = (sa.UniqueConstraint("event_id", name="uq_decision_event"),)

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True, ondelete="CASCADE")
    event_id: int = Field(foreign_key="schedule_event.id", ondelete="CASCADE")
    decision_key: str = Field(max_length=64)
    status: DecisionStatus = Field(default=DecisionStatus.DUE, sa_type=str_enum(DecisionStatus))
    facts: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON)
    # Each fact with its value and sources (server.schedules.rules.Fact.as_dict): which result,
    # accession, draw and date it came from. None on decisions opened before it was kept.
    fact_sources: list[dict[str, Any]] | None = Field(default=None, sa_type=sa.JSON)
    recommended_regimen: str | None = Field(default=None, max_length=64)
    recommended_cycles: int | None = Field(default=None)
    rule_id: str | None = Field(default=None, max_length=64)
    explanation: str | None = Field(default=None, max_length=1000)
    chosen_regimen: str | None = Field(default=None, max_length=64)
    chosen_cycles: int | None = Field(default=None)
    decided_by_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    decided_at: datetime | None = Field(default=None)
    reason: str | None = Field(default=None, max_length=1000)
    created_at: datetime = Field(default_factory=utcnow)


class ParticipantChoiceValue(SQLModel, table=True):
    """A participant's value for a choice the protocol leaves to the care team (e.g. STOP-HER2's
    imaging interval after year one). Absent: the protocol's default. History is in the audit."""

    __tablename__ = "participant_choice"
    __table_args__ = (
        sa.UniqueConstraint("participant_id", "choice_key", name="uq_participant_choice_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", ondelete="CASCADE")
    choice_key: str = Field(max_length=64)
    value: str = Field(max_length=64)
    reason: str = Field(max_length=1000)
    set_by_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    set_at: datetime = Field(default_factory=utcnow)
