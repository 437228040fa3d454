"""Column helpers shared by every table (notifications sits below the domain, so they live here)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

import sqlalchemy as sa


def str_enum(enum_cls: type[enum.Enum]) -> sa.Enum:
    """Store an Enum as its value in a VARCHAR (no native PostgreSQL enum type)."""
    return sa.Enum(
        enum_cls,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda e: [m.value for m in e],
        validate_strings=True,
    )


def utcnow() -> datetime:
    """The current time, aware, in UTC (server.clock re-exports it: one clock)."""
    return datetime.now(UTC)
