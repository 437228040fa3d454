"""Alerts for the care team: list, one alert's full timeline, acknowledge, resolve; escalation
routes of a site (dead routes show before they matter) and who is on call."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint
from sqlmodel import col, select

from api.common import commit
from api.schemas import (
    AcknowledgeSchema,
    AlertLevelsSchema,
    AlertListArgs,
    AlertSchema,
    OnCallSchema,
    ResolveSchema,
)
from notifications.models import OutboxMessage
from server import audit
from server.alerts import rules, service
from server.alerts.models import Alert, AlertLog, AlertState
from server.auth.models import SiteMembership, StaffUser
from server.auth.rules import Permission
from server.auth.scoping import get_site, visible_site_ids_subquery
from server.auth.service import actor_of
from server.auth.web import require
from server.clock import utcnow
from server.db import get_session
from server.errors import NotFound, field_error
from server.participants.models import Participant

blp = Blueprint("alerts", __name__, url_prefix="/api/v1", description="Alerts")


def _get(user: StaffUser, alert_id: int) -> Alert:
    alert = (
        get_session()
        .exec(
            select(Alert).where(
                Alert.id == alert_id, col(Alert.site_id).in_(visible_site_ids_subquery(user))
            )
        )
        .first()
    )
    if alert is None:
        raise NotFound("alert not found")
    return alert


def _dict(alert: Alert, full: bool = False) -> dict[str, Any]:
    session = get_session()
    # The acknowledgement code stays out: it is in the alerted staff's own SMS, nowhere else.
    d = alert.model_dump(exclude={"ack_code"})
    for key in ("kind", "level", "state"):
        d[key] = getattr(alert, key).value
    participant = session.get(Participant, alert.participant_id) if alert.participant_id else None
    d["study_code"] = participant.study_code if participant else None
    if full:
        d["timeline"] = [
            audit.jsonable(e.model_dump())
            for e in session.exec(
                select(AlertLog).where(AlertLog.alert_id == alert.id).order_by(col(AlertLog.id))
            )
        ]
        d["messages"] = [
            {
                "id": m.id,
                "staff_user_id": m.staff_user_id,
                "kind": m.kind,
                "status": m.status.value,
                "tier": int(m.dedupe_key.split(":tier:")[1].split(":")[0])
                if ":tier:" in m.dedupe_key
                else None,
                "intended_at": m.intended_at.isoformat(),
                "sent_at": m.sent_at.isoformat() if m.sent_at else None,
                "delivered_at": m.delivered_at.isoformat() if m.delivered_at else None,
                "failed_at": m.failed_at.isoformat() if m.failed_at else None,
                "error_code": m.error_code,
            }
            for m in session.exec(
                select(OutboxMessage)
                .where(OutboxMessage.ref == f"alert:{alert.id}")
                .order_by(col(OutboxMessage.id))
            )
        ]
    return d


@blp.route("/alerts")
@blp.arguments(AlertListArgs, location="query")
@blp.response(200, AlertSchema(many=True))
def list_alerts(args: dict[str, Any]) -> list[dict[str, Any]]:
    """Alerts of your sites, newest first (filter by state, site, participant)."""
    user = require(Permission.PARTICIPANT_READ)
    q = select(Alert).where(col(Alert.site_id).in_(visible_site_ids_subquery(user)))
    if "state" in args:
        q = q.where(Alert.state == AlertState(args["state"]))
    if "site_id" in args:
        q = q.where(Alert.site_id == args["site_id"])
    if "participant_id" in args:
        q = q.where(Alert.participant_id == args["participant_id"])
    rows = get_session().exec(q.order_by(col(Alert.opened_at).desc()).limit(500)).all()
    return [_dict(a) for a in rows]


@blp.route("/alerts/<int:alert_id>")
@blp.response(200, AlertSchema)
def get_alert(alert_id: int) -> dict[str, Any]:
    """One alert with its whole timeline: every message, tier, acknowledgement, resolution."""
    user = require(Permission.PARTICIPANT_READ)
    return _dict(_get(user, alert_id), full=True)


@blp.route("/alerts/<int:alert_id>/acknowledge", methods=["POST"])
@blp.arguments(AcknowledgeSchema, required=False)  # the note is optional, so is the body
@blp.response(200, AlertSchema)
def acknowledge(args: dict[str, Any], alert_id: int) -> dict[str, Any]:
    """Acknowledge: further tiers stop. A second acknowledgement changes nothing."""
    user = require(Permission.PARTICIPANT_READ)
    alert = _get(user, alert_id)
    require(Permission.ALERT_ACK)
    service.acknowledge(
        session=get_session(),
        alert=alert,
        user=user,
        channel="api",
        now=utcnow(),
        note=args.get("note"),
    )
    commit()
    return _dict(alert, full=True)


@blp.route("/alerts/<int:alert_id>/resolve", methods=["POST"])
@blp.arguments(ResolveSchema)
@blp.response(200, AlertSchema)
def resolve(args: dict[str, Any], alert_id: int) -> dict[str, Any]:
    """Resolve with a note; `resume_treatment` sets the participant to resumed_treatment."""
    user = require(Permission.PARTICIPANT_READ)
    alert = _get(user, alert_id)
    require(Permission.ALERT_ACK)
    service.resolve(
        session=get_session(),
        alert=alert,
        user=user,
        note=args["note"],
        now=utcnow(),
        resume_treatment=args["resume_treatment"],
        resumed_on=args.get("resumed_on"),
    )
    commit()
    return _dict(alert, full=True)


@blp.route("/sites/<int:site_id>/escalation")
@blp.response(200)
def escalation(site_id: int) -> dict[str, Any]:
    """The site's escalation policy and, per tier, who it reaches; dead tiers are flagged."""
    user = require(Permission.PARTICIPANT_READ)
    site = get_site(session=get_session(), user=user, site_id=site_id)
    health = service.route_health(get_session(), site)
    return {
        "site_id": site.id,
        "policy": service.policy_of(site),
        # How each level reaches people here (PUT /sites/{id}/alert-levels changes it).
        "alert_levels": rules.level_settings(site.escalation_policy),
        "tiers": health,
        "has_dead_route": any(t["is_dead"] for t in health),
    }


@blp.route("/sites/<int:site_id>/alert-levels", methods=["PUT"])
@blp.arguments(AlertLevelsSchema)
@blp.response(200)
def set_alert_levels(args: dict[str, Any], site_id: int) -> dict[str, Any]:
    """The site's alert-level settings (admins): a level per alert kind over the protocol's,
    which levels and kinds page at night (`page_24_7`), the night and the morning digest of
    routine tasks. A setting left out goes back to its default; alerts already open keep the
    settings they opened with."""
    user = require(Permission.MANAGE_SITES)
    session = get_session()
    site = get_site(session=session, user=user, site_id=site_id)
    after = service.set_alert_levels(
        session=session, site=site, settings=args, actor=user, now=utcnow()
    )
    commit()
    return {"site_id": site.id, **after}


@blp.route("/sites/<int:site_id>/on-call", methods=["PUT"])
@blp.arguments(OnCallSchema)
@blp.response(200)
def set_on_call(args: dict[str, Any], site_id: int) -> dict[str, Any]:
    """Who is on call at the site (first tier of clinical alerts)."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    site = get_site(session=session, user=user, site_id=site_id)
    require(Permission.SCHEDULE_WRITE)
    memberships = session.exec(
        select(SiteMembership).where(SiteMembership.site_id == site.id)
    ).all()
    members = {m.user_id for m in memberships}
    unknown = sorted(set(args["user_ids"]) - members)
    if unknown:
        raise field_error("user_ids", f"not staff of this site: {', '.join(map(str, unknown))}")
    before = sorted(m.user_id for m in memberships if m.is_on_call)
    for m in memberships:
        m.is_on_call = m.user_id in set(args["user_ids"])
        session.add(m)
    audit.record(
        session=session,
        actor=actor_of(user),
        actor_user_id=user.id,
        action="site.on_call",
        entity="site",
        entity_id=site.id,
        site_id=site.id,
        now=utcnow(),
        before={"on_call": before},
        after={"on_call": sorted(args["user_ids"])},
    )
    commit()
    return {"site_id": site.id, "on_call": sorted(args["user_ids"])}
