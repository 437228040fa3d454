"""Studies: a trial as run by Stepdown, tied to its protocol definition file."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from server.clock import utcnow


class Study(SQLModel, table=True):
    """A trial; `protocol_key` names its definition file in config/protocols/."""

    __tablename__ = "study"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=32, unique=True)
    title: str = Field(max_length=300)
    protocol_key: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
