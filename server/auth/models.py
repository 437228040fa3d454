"""Staff users, their site memberships and their API tokens."""

from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from server.clock import utcnow
from server.db import str_enum


class Role(enum.StrEnum):
    ADMIN = "admin"
    INVESTIGATOR = "investigator"
    COORDINATOR = "coordinator"
    NURSE = "nurse"
    MONITOR = "monitor"


class StaffUser(SQLModel, table=True):
    """A member of a care or study team."""

    __tablename__ = "staff_user"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    full_name: str = Field(max_length=200)
    password_hash: str = Field(max_length=255)
    role: Role = Field(sa_type=str_enum(Role))
    phone_e164: str | None = Field(default=None, max_length=20)
    is_phone_verified: bool = Field(default=False)
    is_active: bool = Field(default=True)
    failed_login_count: int = Field(default=0)
    locked_until_at: datetime | None = Field(default=None)
    password_changed_at: datetime = Field(default_factory=utcnow)
    created_at: datetime = Field(default_factory=utcnow)


class SiteMembership(SQLModel, table=True):
    """Which sites a staff user works for; the only source of participant visibility."""

    __tablename__ = "site_membership"
    __table_args__ = (sa.UniqueConstraint("user_id", "site_id", name="uq_site_membership"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="staff_user.id", index=True, ondelete="CASCADE")
    site_id: int = Field(foreign_key="site.id", index=True)
    # On call for this site: first tier of clinical alerts.
    is_on_call: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow)


class ApiToken(SQLModel, table=True):
    """A bearer token for an API client; only its SHA-256 is stored."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="staff_user.id", index=True, ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True)
    label: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = Field(default=None)
    last_used_at: datetime | None = Field(default=None)


class StaffSession(SQLModel, table=True):
    """A logged-in browser session, held server-side so that logging out, an idle timeout or a
    password change ends it for good (a copied cookie is worthless afterwards).

    The cookie carries an opaque id; only its SHA-256 is stored."""

    __tablename__ = "staff_session"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="staff_user.id", index=True, ondelete="CASCADE")
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow)
    ended_at: datetime | None = Field(default=None)
    # logout, idle, expired, password_changed, deactivated
    end_reason: str | None = Field(default=None, max_length=32)
