"""Questionnaire responses, stored item by item with their scale scores."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow
from server.db import str_enum
from server.participants.models import Locale


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
    # The version of the site's loaded text the participant answered (instrument_text.version);
    # None when the questions' wording comes with the instrument file itself.
    text_version: int | None = Field(default=None)


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


class InstrumentText(SQLModel, table=True):
    """The item and answer wording of one instrument in one language, as a site loaded it from
    its licensed copy (`stepdown instruments load-text`). A later load is a new version; the
    highest version is the one shown, earlier ones stay as the record of what was asked."""

    __tablename__ = "instrument_text"
    __table_args__ = (
        sa.UniqueConstraint(
            "instrument_key", "locale", "version", name="uq_instrument_text_version"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    instrument_key: str = Field(max_length=64)
    locale: Locale = Field(sa_type=str_enum(Locale))
    version: int
    # The instrument file's version the text was checked against (a new edition needs new text).
    instrument_version: str = Field(max_length=32)
    # {"title", "intro", "headings": {item: text}, "items": {item: text},
    #  "responses": {set: {value: label}}}: see server/surveys/texts.py.
    content: dict[str, Any] = Field(sa_type=sa.JSON)
    sha256: str = Field(max_length=64)
    source_file: str = Field(max_length=255)
    # What the file says of itself (which licensed copy, which translation).
    source: str | None = Field(default=None, max_length=300)
    loaded_by: str = Field(max_length=100)
    loaded_at: datetime = Field(default_factory=utcnow)
