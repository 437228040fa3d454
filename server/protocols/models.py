"""Studies, and the protocol versions loaded for them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
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


class ProtocolVersion(SQLModel, table=True):
    """A snapshot of a protocol definition as loaded; history is never rewritten."""

    __tablename__ = "protocol_version"
    __table_args__ = (sa.UniqueConstraint("protocol_key", "version", name="uq_protocol_version"),)

    id: int | None = Field(default=None, primary_key=True)
    protocol_key: str = Field(max_length=64, index=True)
    version: str = Field(max_length=32)
    sha256: str = Field(max_length=64)
    definition: dict[str, Any] = Field(sa_type=sa.JSON)
    source_file: str = Field(max_length=255)
    loaded_at: datetime = Field(default_factory=utcnow)
