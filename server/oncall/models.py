"""On-call rotas: one per site and layer (primary, backup), and their overrides."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow


class Rota(SQLModel, table=True):
    """A site's layer: its members take turns of a day or a week, handing over at a site
    wall-clock time (server/oncall/rules.py)."""

    __tablename__ = "rota"
    __table_args__ = (sa.UniqueConstraint("site_id", "layer", name="uq_rota_site_layer"),)

    id: int | None = Field(default=None, primary_key=True)
    site_id: int = Field(foreign_key="site.id", index=True)
    layer: str = Field(max_length=16)  # primary | backup
    period: str = Field(max_length=8)  # daily | weekly
    handover: str = Field(max_length=5)  # "08:00", site time
    handover_weekday: int = Field(default=0)  # weekly: 0 = Monday
    starts_on: date
    members: list[int] = Field(default_factory=list, sa_type=sa.JSON)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class RotaOverride(SQLModel, table=True):
    """Someone else on call for a span (a day off, a holiday): wins over the turn."""

    __tablename__ = "rota_override"

    id: int | None = Field(default=None, primary_key=True)
    rota_id: int = Field(foreign_key="rota.id", index=True)
    user_id: int = Field(foreign_key="staff_user.id")
    starts_at: datetime
    ends_at: datetime
    reason: str | None = Field(default=None, max_length=200)
    created_by_user_id: int | None = Field(default=None, foreign_key="staff_user.id")
    created_at: datetime = Field(default_factory=utcnow)


class CalendarLink(SQLModel, table=True):
    """A person's secret calendar subscription link (GET /oncall/feed/<token>.ics): at most one
    per staff user; only the SHA-256 of its token is stored. Kept out of staff_user so that no
    read, listing or audit snapshot of a user can ever carry it."""

    __tablename__ = "oncall_calendar_link"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="staff_user.id", unique=True, ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
