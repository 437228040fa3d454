"""Questionnaire responses, stored item by item with their scale scores."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow
from server.db import str_enum


class ResponseStatus(enum.StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"


class SurveyResponse(SQLModel, table=True):
    """One participant's answers to one questionnaire event (one response per event, ever)."""

    __tablename__ = "survey_response"
    __table_args__ = (sa.UniqueConstraint("participant_id", "event_id", name="uq_response_event"),)

    id: int | None = Field(default=None, primary_key=True)
    participant_id: int = Field(foreign_key="participant.id", index=True)
    event_id: int = Field(foreign_key="schedule_event.id")
    instrument_key: str = Field(max_length=64)
    instrument_version: str = Field(max_length=32)
    status: ResponseStatus = Field(default=ResponseStatus.DRAFT, sa_type=str_enum(ResponseStatus))
    channel: str = Field(max_length=16)
    started_at: datetime = Field(default_factory=utcnow)
    submitted_at: datetime | None = Field(default=None)


class SurveyAnswer(SQLModel, table=True):
    """One item's answer."""

    __tablename__ = "survey_answer"
    __table_args__ = (sa.UniqueConstraint("response_id", "item_id", name="uq_answer_item"),)

    id: int | None = Field(default=None, primary_key=True)
    response_id: int = Field(foreign_key="survey_response.id", index=True, ondelete="CASCADE")
    item_id: str = Field(max_length=48)
    value: int
    answered_at: datetime = Field(default_factory=utcnow)


class SurveyScore(SQLModel, table=True):
    """One scale's score of a submitted response (None when too few items were answered)."""

    __tablename__ = "survey_score"
    __table_args__ = (sa.UniqueConstraint("response_id", "scale", name="uq_score_scale"),)

    id: int | None = Field(default=None, primary_key=True)
    response_id: int = Field(foreign_key="survey_response.id", index=True, ondelete="CASCADE")
    scale: str = Field(max_length=32)
    raw: float | None = Field(default=None)
    score: float | None = Field(default=None)
    answered: int
    total: int
    is_missing: bool
