"""The audit trail: append-only rows written in the same transaction as the change they record.

The database refuses UPDATE and DELETE on audit_event (triggers in the migration), so nobody can
edit the trail through the system (21 CFR 11.10(e): changes must not obscure earlier records).
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime, time
from typing import Any

import sqlalchemy as sa
from flask import g, has_request_context, request
from sqlmodel import Field, Session, SQLModel

from server.clock import utcnow


class AuditEvent(SQLModel, table=True):
    """One recorded action: who, what, on which entity, before and after, why, when."""

    __tablename__ = "audit_event"
    __table_args__ = (sa.Index("ix_audit_entity", "entity", "entity_id"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=100)
    actor_user_id: int | None = Field(default=None, index=True)
    action: str = Field(max_length=64)
    entity: str = Field(max_length=64)
    entity_id: str = Field(max_length=64)
    site_id: int | None = Field(default=None, index=True)
    before: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    after: dict[str, Any] | None = Field(default=None, sa_type=sa.JSON)
    reason: str | None = Field(default=None, max_length=1000)
    request_id: str | None = Field(default=None, max_length=64)


def current_request_id() -> str | None:
    """The request id of the current HTTP request (X-Request-ID or a generated one)."""
    if not has_request_context():
        return None
    if "request_id" not in g:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming[:64] if incoming else uuid.uuid4().hex
    return g.request_id  # type: ignore[no-any-return]


def jsonable(value: Any) -> Any:
    """Turn dates, enums and nested containers into JSON-safe values."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [jsonable(v) for v in value]
    return value


def snapshot(obj: Any, fields: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A JSON-safe dict of the named attributes of a model, for before/after."""
    return {f: jsonable(getattr(obj, f)) for f in fields}


def record(
    *,
    session: Session,
    actor: str,
    action: str,
    entity: str,
    entity_id: Any,
    now: datetime,
    actor_user_id: int | None = None,
    site_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
) -> AuditEvent:
    """Add an audit row to the session (flushed with the change it records)."""
    event = AuditEvent(
        at=now,
        actor=actor,
        actor_user_id=actor_user_id,
        action=action,
        entity=entity,
        entity_id=str(entity_id),
        site_id=site_id,
        before=jsonable(before) if before is not None else None,
        after=jsonable(after) if after is not None else None,
        reason=reason,
        request_id=current_request_id(),
    )
    session.add(event)
    session.flush()
    return event


def record_export(
    *,
    session: Session,
    actor: str,
    actor_user_id: int | None,
    entity: str,
    view: str,
    filters: dict[str, Any],
    row_count: int,
    site_ids: list[int] | tuple[int, ...] | set[int],
    now: datetime,
) -> AuditEvent:
    """Audit a CSV export of trial data (`<entity>.export`): who, which list with which filters,
    how many rows, from which sites."""
    sites = sorted(set(site_ids))
    return record(
        session=session,
        actor=actor,
        actor_user_id=actor_user_id,
        action=f"{entity}.export",
        entity=entity,
        entity_id=view,
        site_id=sites[0] if len(sites) == 1 else None,
        now=now,
        after={"view": view, "filters": filters, "rows": row_count, "site_ids": sites},
    )
