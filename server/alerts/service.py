"""Alerts: open one per trigger, notify tier 1 in the same transaction, escalate due alerts under a
row lock, stop the moment an acknowledgement commits, resolve with a note.

Every SMS is an outbox row; `ref = "alert:<id>"` lets an acknowledgement cancel what has not gone
out yet. A tier with nobody reachable is skipped at once (and logged), never waited on.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app, has_app_context
from sqlmodel import Session, col, select

from notifications import outbox
from notifications.messages import MessageKind, compose, render
from notifications.models import (
    PRIORITY_STAFF_ALERT,
    PRIORITY_STAFF_NOTICE,
    MessageCategory,
    MessageStatus,
    OutboxMessage,
)
from server import audit
from server.alerts import rules, voice
from server.alerts.models import Alert, AlertKind, AlertLog, AlertState, Level
from server.auth.models import Role, SiteMembership, StaffUser
from server.auth.rules import Permission, has_permission
from server.clock import utcnow
from server.errors import Conflict, Forbidden, NotFound, field_error
from server.oncall import service as oncall
from server.participants.models import Participant, Site
from server.protocols import service as protocols

OPEN_STATES = (AlertState.OPEN,)


def _link(alert_id: int | None) -> str:
    base = current_app.config["PUBLIC_BASE_URL"] if has_app_context() else ""
    return f"{base}/alerts/{alert_id}"


def policy_of(site: Site | None) -> dict[str, Any]:
    """The site's escalation policy (its own, else the default)."""
    return (site.escalation_policy if site and site.escalation_policy else None) or (
        rules.DEFAULT_POLICY
    )


def set_alert_levels(
    *,
    session: Session,
    site: Site,
    settings: dict[str, Any],
    actor: StaffUser,
    now: datetime,
) -> dict[str, Any]:
    """Replace a site's level settings (levels by kind, what pages at night, the night, the
    morning digest; a setting left out goes back to its default); its routes are kept. Alerts
    already open keep the policy they opened with. Audited."""
    before = rules.level_settings(site.escalation_policy)
    policy = {
        key: value
        for key, value in (site.escalation_policy or {}).items()
        if key not in rules.LEVEL_SETTINGS
    }
    policy.update({key: settings[key] for key in rules.LEVEL_SETTINGS if key in settings})
    site.escalation_policy = policy or None
    session.add(site)
    after = rules.level_settings(policy)
    audit.record(
        session=session,
        actor=f"staff:{actor.id}",
        actor_user_id=actor.id,
        action="site.alert_levels",
        entity="site",
        entity_id=site.id,
        site_id=site.id,
        now=now,
        before=before,
        after=after,
    )
    session.flush()
    return after


def log(
    session: Session,
    alert: Alert,
    what: str,
    now: datetime,
    *,
    tier: int | None = None,
    actor: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append to the alert's timeline."""
    session.add(
        AlertLog(
            alert_id=alert.id,  # type: ignore[arg-type]
            at=now,
            what=what,
            tier=tier,
            actor=actor,  # type: ignore[arg-type]
            detail=audit.jsonable(detail) if detail else None,
        )
    )


# --- recipients ----------------------------------------------------------------------------------


def recipients(session: Session, site_id: int, group: str) -> list[StaffUser]:
    """Active staff of the site in a recipient group who have a verified phone."""
    q = (
        select(StaffUser, SiteMembership.is_on_call)
        .join(SiteMembership, col(SiteMembership.user_id) == col(StaffUser.id))
        .where(
            SiteMembership.site_id == site_id,
            col(StaffUser.is_active).is_(True),
            col(StaffUser.is_phone_verified).is_(True),
            col(StaffUser.phone_e164).is_not(None),
        )
        .order_by(col(StaffUser.id))
    )
    rows = session.exec(q).all()
    if group in (rules.ON_CALL_NURSES, rules.ROTA_PRIMARY, rules.ROTA_BACKUP):
        site = session.get(Site, site_id)
        layer = "backup" if group == rules.ROTA_BACKUP else "primary"
        person = oncall.on_call_user(session, site, layer, utcnow()) if site else None
        if person is not None or group != rules.ON_CALL_NURSES:
            # The rota's person now (no verified phone: nobody, and the tier moves on).
            return [person] if person is not None and oncall.reachable(person) else []
    if group == rules.ON_CALL_NURSES:
        on_call = [u for u, is_on_call in rows if u.role == Role.NURSE and is_on_call]
        # Nobody on call: every nurse of the site rather than nobody.
        return on_call or [u for u, _ in rows if u.role == Role.NURSE]
    roles = {
        rules.NURSES_AND_COORDINATORS: {Role.NURSE, Role.COORDINATOR},
        rules.COORDINATORS: {Role.COORDINATOR},
        rules.INVESTIGATORS: {Role.INVESTIGATOR},
        rules.ADMINS: {Role.ADMIN},
    }[group]
    return [u for u, _ in rows if u.role in roles]


def route_health(session: Session, site: Site) -> list[dict[str, Any]]:
    """Every tier of every route with who it reaches: a dead route shows before it is needed."""
    out = []
    routes = {**rules.DEFAULT_POLICY["routes"], **(policy_of(site).get("routes") or {})}
    for name, route in routes.items():
        for tier in rules.tiers(route):
            reach = recipients(session, site.id, tier.recipients)  # type: ignore[arg-type]
            on_call_missing = tier.recipients == rules.ON_CALL_NURSES and not any(
                m.is_on_call
                for m in session.exec(
                    select(SiteMembership).where(SiteMembership.site_id == site.id)
                )
            )
            out.append(
                {
                    "route": name,
                    "tier": tier.number,
                    "recipients": tier.recipients,
                    "timeout_minutes": int(tier.timeout.total_seconds() // 60)
                    if tier.timeout is not None
                    else None,
                    "reachable": [u.id for u in reach],
                    "is_dead": not reach,
                    "warning": "nobody with a verified phone"
                    if not reach
                    else ("nobody on call: every nurse is paged" if on_call_missing else None),
                }
            )
    out.extend(oncall.health(session, site, utcnow()))
    out.append(failsafe_health(session, site))
    return out


# --- the fail-safe -------------------------------------------------------------------------------
#
# Joint Commission NPSG 2C: a fail-safe alternate process when the responsible caregiver cannot be
# reached. A site names one (a role and/or a number; it cannot enrol without); an alert whose last
# tier went unanswered past its timeout, or whose route reached nobody, calls on it exactly once.

FAILSAFE_ROUTE = "failsafe"


def failsafe_people(session: Session, site: Site) -> list[StaffUser]:
    """The site's fail-safe role: its active staff at the site with a verified phone."""
    if not site.failsafe_role:
        return []
    return list(
        session.exec(
            select(StaffUser)
            .join(SiteMembership, col(SiteMembership.user_id) == col(StaffUser.id))
            .where(
                SiteMembership.site_id == site.id,
                StaffUser.role == Role(site.failsafe_role),
                col(StaffUser.is_active).is_(True),
                col(StaffUser.is_phone_verified).is_(True),
                col(StaffUser.phone_e164).is_not(None),
            )
            .order_by(col(StaffUser.id))
        ).all()
    )


def failsafe_health(session: Session, site: Site) -> dict[str, Any]:
    """The fail-safe as a route tier: dead when the site has none, or its role reaches nobody
    and it has no number."""
    people = failsafe_people(session, site)
    described = " and ".join(
        x
        for x in (
            f"role {site.failsafe_role}" if site.failsafe_role else "",
            "the site's number" if site.failsafe_phone_e164 else "",
        )
        if x
    )
    dead = not people and not site.failsafe_phone_e164
    warning = None
    if not site.failsafe_role and not site.failsafe_phone_e164:
        warning = "no fail-safe designated: the site cannot enrol"
    elif dead:
        warning = "nobody with a verified phone"
    return {
        "route": FAILSAFE_ROUTE,
        "tier": 1,
        "recipients": described or "none",
        "timeout_minutes": None,
        "reachable": [u.id for u in people],
        "is_dead": dead,
        "warning": warning,
    }


def fire_failsafe(*, session: Session, alert: Alert, now: datetime) -> bool:
    """Call on the site's fail-safe for an alert nobody acknowledged: SMS to its role's staff
    (with the ACK code) and its number (without), a line on the timeline, an audit row. Exactly
    once per alert (`failsafe_at`, under the alert's row lock); never for routine tasks or the
    system's own alerts."""
    if (
        alert.failsafe_at is not None
        or alert.state != AlertState.OPEN
        or not rules.needs_ack(alert.level)
        or alert.kind in rules.SYSTEM_KINDS
        or alert.site_id is None
    ):
        return False
    site = session.get(Site, alert.site_id)
    if site is None:
        return False
    alert.failsafe_at = now
    session.add(alert)
    people = failsafe_people(session, site)
    participant = session.get(Participant, alert.participant_id) if alert.participant_id else None
    code = participant.study_code if participant else f"SITE-{alert.site_id}"
    locale = rules.staff_locale(site.country)
    link = _link(alert.id)
    prefix = f"alert:{alert.id}:tier:{alert.tier}:failsafe"
    for person in people:
        outbox.enqueue(
            session,
            dedupe_key=f"{prefix}:staff:{person.id}",
            category=MessageCategory.STAFF_ALERT,
            kind=MessageKind.ALERT_FAILSAFE.value,
            to=person.phone_e164,  # type: ignore[arg-type]
            locale=locale,
            body=compose(
                MessageKind.ALERT_FAILSAFE, locale, code=code, ack_code=alert.ack_code, link=link
            ),
            priority=PRIORITY_STAFF_ALERT,
            intended_at=now,
            staff_user_id=person.id,
            ref=f"alert:{alert.id}",
            now=now,
        )
    if people:
        # And a phone call to each of them at once.
        voice.queue_calls(session, alert, alert.tier, people, now, locale, now, kind="failsafe")
    if site.failsafe_phone_e164:
        outbox.enqueue(
            session,
            dedupe_key=f"{prefix}:number",
            category=MessageCategory.STAFF_ALERT,
            kind=MessageKind.ALERT_FAILSAFE_NUMBER.value,
            to=site.failsafe_phone_e164,
            locale=locale,
            body=compose(MessageKind.ALERT_FAILSAFE_NUMBER, locale, code=code, link=link),
            priority=PRIORITY_STAFF_ALERT,
            intended_at=now,
            ref=f"alert:{alert.id}",
            now=now,
        )
    detail = {
        "role": site.failsafe_role,
        "recipients": [u.id for u in people],
        "site_number": bool(site.failsafe_phone_e164),
    }
    log(session, alert, "failsafe_fired", now, tier=alert.tier, detail=detail)
    audit.record(
        session=session,
        actor="system:escalation",
        action="alert.failsafe_fired",
        entity="alert",
        entity_id=alert.id,
        site_id=alert.site_id,
        now=now,
        after=detail,
    )
    if not people and not site.failsafe_phone_e164:
        logging.getLogger("stepdown.alerts").error(
            "alert %s: the fail-safe of site %s reaches nobody", alert.id, site.id
        )
    session.flush()
    return True


def failsafe_alerts(session: Session, user: StaffUser) -> list[tuple[Alert, str | None]]:
    """Open alerts of the user's sites that reached the fail-safe (every staff page shows them
    in a red banner until someone acknowledges), with their participant's code."""
    return list(
        session.exec(
            select(Alert, Participant.study_code)
            .outerjoin(Participant, col(Participant.id) == col(Alert.participant_id))
            .where(
                Alert.state == AlertState.OPEN,
                col(Alert.failsafe_at).is_not(None),
                col(Alert.site_id).in_(
                    select(SiteMembership.site_id).where(SiteMembership.user_id == user.id)
                ),
            )
            .order_by(col(Alert.failsafe_at))
            .limit(20)
        ).all()
    )


# --- opening -------------------------------------------------------------------------------------


@functools.cache
def _process_code_key() -> bytes:
    # Outside an app (a script, a unit test) there is no secret: a key of this process only.
    # Codes are stored with their alert, so nothing ever needs to compute one again.
    return secrets.token_bytes(32)


def _code_key() -> bytes:
    """The key of the code permutation, derived from the app's SECRET_KEY (one key for every
    process of an installation, so concurrent alerts never meet on a code)."""
    secret = current_app.config.get("SECRET_KEY") if has_app_context() else None
    if not secret:
        return _process_code_key()
    return hmac.new(str(secret).encode(), b"stepdown:alert-ack-code:v1", hashlib.sha256).digest()


def _ack_code(session: Session, alert_id: int) -> str:
    """A 6-digit code: a keyed permutation of the alert id (rules.ack_code). Distinct ids give
    distinct codes, so concurrent transactions cannot pick the same one (random picks could:
    neither sees the other's uncommitted row, and no unique index covers open alerts only);
    without the key, seeing alert ids and their codes says nothing about another alert's code.
    An alert 900,000 ids older still open with the same code pushes to the next free one."""
    key = _code_key()
    for step in range(rules.ACK_CODE_SPACE):
        code = rules.ack_code(key, alert_id, step)
        taken = session.exec(
            select(Alert.id).where(
                Alert.ack_code == code,
                col(Alert.state) == AlertState.OPEN,
                Alert.id != alert_id,
            )
        ).first()
        if taken is None:
            return code
    raise RuntimeError("no free acknowledgement code")


def open_alert(
    *,
    session: Session,
    kind: AlertKind,
    trigger_key: str,
    participant: Participant | None,
    site_id: int | None,
    summary: str,
    now: datetime,
    result_id: int | None = None,
    event_id: int | None = None,
    actor: str = "system:rules",
) -> tuple[Alert, bool]:
    """Open an alert (idempotent on its trigger) and queue tier 1 in this transaction."""
    existing = session.exec(select(Alert).where(Alert.trigger_key == trigger_key)).first()
    if existing is not None:
        return existing, False
    site = session.get(Site, site_id) if site_id else None
    policy = policy_of(site)
    level = rules.level_of(
        kind, protocol_level=protocol_level(session, participant, kind), policy=policy
    )
    alert = Alert(
        trigger_key=trigger_key,
        kind=kind,
        level=level,
        participant_id=participant.id if participant else None,
        site_id=site_id,
        result_id=result_id,
        event_id=event_id,
        ack_code="----",
        summary=summary[:300],
        policy=policy,
        opened_at=now,
    )
    session.add(alert)
    session.flush()
    alert.ack_code = _ack_code(session, alert.id)  # type: ignore[arg-type]
    session.add(alert)
    session.flush()
    log(
        session,
        alert,
        "opened",
        now,
        actor=actor,
        detail={"kind": kind.value, "level": level.value},
    )
    audit.record(
        session=session,
        actor=actor,
        action="alert.open",
        entity="alert",
        entity_id=alert.id,
        site_id=site_id,
        now=now,
        after={
            "kind": kind.value,
            "level": level.value,
            "trigger": trigger_key,
            "participant_id": alert.participant_id,
        },
    )
    notify_tier(session=session, alert=alert, tier=1, now=now)
    return alert, True


def protocol_level(
    session: Session, participant: Participant | None, kind: AlertKind
) -> str | None:
    """The level the participant's study protocol gives this kind of alert (its `alerts:`)."""
    if participant is None:
        return None
    try:
        _, protocol = protocols.protocol_of_study(session, participant.study_id)
    except NotFound:
        return None
    guidance = protocol.alerts.get(kind.value)
    return guidance.level.value if guidance is not None and guidance.level else None


def notify_tier(*, session: Session, alert: Alert, tier: int, now: datetime) -> None:
    """Queue the SMS of one tier and set when the next one is due; skip empty tiers at once.
    When the SMS may go out depends on the level (rules.send_moment); routine never escalates."""
    route = rules.route(alert.policy, alert.kind, alert.level)
    chain = rules.tiers(route)
    site = session.get(Site, alert.site_id) if alert.site_id else None
    zone = ZoneInfo(site.timezone) if site else ZoneInfo("UTC")
    send_at = rules.send_moment(
        kind=alert.kind, level=alert.level, moment=now, zone=zone, policy=alert.policy
    )
    while True:
        step = chain[tier - 1]
        people = recipients(session, alert.site_id, step.recipients) if alert.site_id else []
        alert.tier = tier
        if people:
            if step.texts:
                _queue(session, alert, tier, people, send_at, now, site)
            if rules.needs_ack(alert.level):
                # The voice tier: a call at once (channel call/both), or when the SMS is still
                # unacknowledged after `call_after_minutes` (default critical tier 1: 10).
                locale = rules.staff_locale(site.country if site else None)
                if step.calls_at_once:
                    voice.queue_calls(session, alert, tier, people, send_at, locale, now)
                elif step.call_after is not None:
                    due = send_at + step.call_after
                    voice.queue_calls(session, alert, tier, people, due, locale, now)
            log(
                session,
                alert,
                "tier_notified",
                now,
                tier=tier,
                detail={"recipients": [u.id for u in people], "send_at": send_at},
            )
            escalates = rules.needs_ack(alert.level) and step.timeout is not None
            alert.next_tier_at = send_at + step.timeout if escalates else None  # type: ignore[operator]
            break
        log(
            session,
            alert,
            "tier_unreachable",
            now,
            tier=tier,
            detail={"recipients": step.recipients},
        )
        nxt = rules.next_step(route, tier, alert.repeats_done)
        if nxt is None or nxt[0] == tier:
            alert.next_tier_at = None
            log(session, alert, "route_exhausted", now, tier=tier)
            # Nobody of any tier can be reached: the fail-safe at once.
            fire_failsafe(session=session, alert=alert, now=now)
            break
        tier, alert.repeats_done = nxt
    session.add(alert)
    session.flush()


# A routine task's SMS names what to do when its kind has a text of its own.
TASK_MESSAGE = {
    AlertKind.RESULT_OVERDUE: MessageKind.RESULT_OVERDUE,
    AlertKind.MISSED_WINDOW: MessageKind.MISSED_WINDOW,
    AlertKind.REDRAW_NEEDED: MessageKind.REDRAW_NEEDED,
}


def _message(alert: Alert, tier: int, code: str, locale: str) -> tuple[MessageKind, Any]:
    """The SMS of an alert's tier, worded by its level (URGENT / action today / task). compose:
    the outbox also keeps a copy with the code hidden, the only one staff may see."""
    link = _link(alert.id)
    first = tier == 1 and alert.repeats_done == 0
    if alert.level is Level.ROUTINE:
        kind = TASK_MESSAGE.get(alert.kind, MessageKind.ALERT_TASK)
        return kind, compose(kind, locale, code=code, link=link)
    if alert.level is Level.CRITICAL:
        kind = MessageKind.ALERT_NEW if first else MessageKind.ALERT_ESCALATED
    else:
        kind = MessageKind.ALERT_URGENT if first else MessageKind.ALERT_URGENT_ESCALATED
    params: dict[str, Any] = {"code": code, "ack_code": alert.ack_code, "link": link}
    if not first:
        params["tier"] = tier
    return kind, compose(kind, locale, **params)


def _queue(
    session: Session,
    alert: Alert,
    tier: int,
    people: list[StaffUser],
    send_at: datetime,
    now: datetime,
    site: Site | None,
) -> None:
    participant = session.get(Participant, alert.participant_id) if alert.participant_id else None
    code = participant.study_code if participant else (f"SITE-{alert.site_id}")
    locale = rules.staff_locale(site.country if site else None)
    kind, body = _message(alert, tier, code, locale)
    # Bundles (the dispatcher merges the rows a phone has due at once into one SMS): critical
    # alerts with their code, so a bundle's codes are always critical ones ("URGENT"), and
    # routine tasks without one (no reply needed): the morning digest. An urgent alert always
    # goes alone, so its words ("action needed today") are never lost in a bundle.
    bundle_item = (
        {"code": code, "ack": alert.ack_code}
        if alert.level is Level.CRITICAL
        else ({"code": code, "ack": ""} if alert.level is Level.ROUTINE else None)
    )
    for person in people:
        row, _ = outbox.enqueue(
            session,
            dedupe_key=f"alert:{alert.id}:tier:{tier}:rep:{alert.repeats_done}:staff:{person.id}",
            category=MessageCategory.STAFF_ALERT,
            kind=kind.value,
            to=person.phone_e164,  # type: ignore[arg-type]
            locale=locale,
            body=body,
            # Tasks after alerts: a bundle lists the alerts first.
            priority=PRIORITY_STAFF_NOTICE
            if alert.level is Level.ROUTINE
            else PRIORITY_STAFF_ALERT,
            intended_at=now,
            not_before_at=send_at,
            staff_user_id=person.id,
            ref=f"alert:{alert.id}",
            now=now,
        )
        if row.bundle_item is None and bundle_item is not None:
            row.bundle_item = bundle_item
            session.add(row)


# --- escalation ----------------------------------------------------------------------------------


# Alerts per transaction of the escalation job: hundreds due at once (a mass event) are worked
# through in short commits, never one long lock.
ESCALATE_COMMIT_EVERY = 20


def escalate_due(*, session: Session, now: datetime, batch: int = 200) -> dict[str, int]:
    """Advance every open alert whose next tier is due (row-locked; acknowledged ones stop),
    up to `batch` per run, committing every ESCALATE_COMMIT_EVERY alerts."""
    advanced = exhausted = 0
    done: list[int] = []
    while len(done) < batch:
        q = (
            select(Alert)
            .where(col(Alert.state) == AlertState.OPEN, col(Alert.next_tier_at) <= now)
            .order_by(col(Alert.next_tier_at))
            .limit(min(ESCALATE_COMMIT_EVERY, batch - len(done)))
            .with_for_update(skip_locked=True)
        )
        if done:
            q = q.where(col(Alert.id).not_in(done))
        rows = session.exec(q).all()
        if not rows:
            break
        for alert in rows:
            done.append(alert.id)  # type: ignore[arg-type]
            if escalate(session=session, alert=alert, now=now, expected_tier=alert.tier):
                advanced += 1
            else:
                exhausted += 1
        session.commit()
    return {"advanced": advanced, "exhausted": exhausted}


def escalate(*, session: Session, alert: Alert, now: datetime, expected_tier: int) -> bool:
    """Notify the next tier, if the alert is still open and still at the tier we expect."""
    session.refresh(alert, with_for_update=True)
    if alert.state != AlertState.OPEN or alert.tier != expected_tier:
        log(session, alert, "stale_escalation_ignored", now, tier=expected_tier)
        return False
    if not rules.needs_ack(alert.level):
        # Routine work never escalates (an alert opened before levels may still have a timer).
        alert.next_tier_at = None
        session.add(alert)
        return False
    route = rules.route(alert.policy, alert.kind, alert.level)
    nxt = rules.next_step(route, alert.tier, alert.repeats_done)
    if nxt is None:
        alert.next_tier_at = None
        session.add(alert)
        log(session, alert, "route_exhausted", now, tier=alert.tier)
        # The last tier's timeout passed unanswered: the site's fail-safe, once.
        fire_failsafe(session=session, alert=alert, now=now)
        return False
    alert.repeats_done = nxt[1]
    notify_tier(session=session, alert=alert, tier=nxt[0], now=now)
    return True


def on_delivery_failed(session: Session, message: OutboxMessage, now: datetime) -> None:
    """An alert SMS that failed or was undelivered moves the alert to its next tier at once."""
    if message.category != MessageCategory.STAFF_ALERT or not (message.ref or "").startswith(
        "alert:"
    ):
        return
    alert = session.get(Alert, int(message.ref.split(":")[1]))  # type: ignore[union-attr]
    if alert is None or alert.state != AlertState.OPEN:
        return
    tier = int(message.dedupe_key.split(":tier:")[1].split(":")[0])
    if tier != alert.tier:
        return  # an older tier's failure: the chain has moved on already
    log(
        session,
        alert,
        "delivery_failed",
        now,
        tier=tier,
        detail={"message_id": message.id, "error_code": message.error_code},
    )
    if rules.needs_ack(alert.level):
        escalate(session=session, alert=alert, now=now, expected_tier=tier)


# --- acknowledgement and resolution --------------------------------------------------------------


def acknowledge(
    *,
    session: Session,
    alert: Alert,
    user: StaffUser,
    channel: str,
    now: datetime,
    note: str | None = None,
) -> bool:
    """Acknowledge once; further tiers stop. False if it was already acknowledged or resolved."""
    session.refresh(alert, with_for_update=True)
    if alert.state != AlertState.OPEN:
        log(
            session,
            alert,
            "ack_repeated",
            now,
            actor=f"staff:{user.id}",
            detail={"channel": channel},
        )
        return False
    alert.state = AlertState.ACKNOWLEDGED
    alert.acknowledged_at = now
    alert.acknowledged_by_user_id = user.id
    alert.ack_channel = channel
    alert.next_tier_at = None
    session.add(alert)
    cancelled = outbox.cancel_where(
        session, refs=[f"alert:{alert.id}"], now=now, reason="alert acknowledged"
    )
    log(
        session,
        alert,
        "acknowledged",
        now,
        actor=f"staff:{user.id}",
        detail={"channel": channel, "note": note, "cancelled_messages": cancelled},
    )
    audit.record(
        session=session,
        actor=f"staff:{user.id}",
        actor_user_id=user.id,
        action="alert.acknowledge",
        entity="alert",
        entity_id=alert.id,
        site_id=alert.site_id,
        now=now,
        before={"state": AlertState.OPEN.value},
        after={"state": AlertState.ACKNOWLEDGED.value, "channel": channel},
        reason=note,
    )
    return True


# The note is also the audit row's reason (1,000 characters).
MAX_NOTE = 1000


def resolve(
    *,
    session: Session,
    alert: Alert,
    user: StaffUser,
    note: str,
    now: datetime,
    resume_treatment: bool = False,
    resumed_on: date | None = None,
) -> Alert:
    """Resolve with a note; optionally record that treatment resumed (the schedule re-plans)."""
    if not note.strip():
        raise field_error("note", "required")
    if len(note) > MAX_NOTE:
        raise field_error("note", f"at most {MAX_NOTE} characters")
    if resume_treatment and not has_permission(user.role, Permission.PARTICIPANT_WRITE):
        # Resuming treatment changes the participant's status: trial data, not an alert action.
        raise Forbidden(f"your role ({user.role.value}) may not change a participant's status")
    session.refresh(alert, with_for_update=True)
    if alert.state == AlertState.RESOLVED:
        raise Conflict("the alert is already resolved")
    if alert.state == AlertState.OPEN:
        acknowledge(session=session, alert=alert, user=user, channel="resolve", now=now)
    before = alert.state.value
    alert.state = AlertState.RESOLVED
    alert.resolved_at = now
    alert.resolved_by_user_id = user.id
    alert.resolution_note = note
    alert.next_tier_at = None
    session.add(alert)
    log(
        session,
        alert,
        "resolved",
        now,
        actor=f"staff:{user.id}",
        detail={"note": note, "resume_treatment": resume_treatment, "resumed_on": resumed_on},
    )
    audit.record(
        session=session,
        actor=f"staff:{user.id}",
        actor_user_id=user.id,
        action="alert.resolve",
        entity="alert",
        entity_id=alert.id,
        site_id=alert.site_id,
        now=now,
        before={"state": before},
        after={"state": AlertState.RESOLVED.value, "resume_treatment": resume_treatment},
        reason=note,
    )
    if resume_treatment and alert.participant_id:
        from server.participants import service as participants

        participant = session.get(Participant, alert.participant_id)
        assert participant is not None
        reason = f"alert {alert.id}: {note}" + (f" (resumed {resumed_on})" if resumed_on else "")
        participants.update(
            session=session,
            user=user,
            participant=participant,
            changes={"status": "resumed_treatment"},
            reason=reason,
            now=now,
        )
    return alert


class SmsAckOutcome(enum.StrEnum):
    """What an "ACK <code>" SMS did."""

    ACKNOWLEDGED = "acknowledged"
    ALREADY_ACKNOWLEDGED = "already_acknowledged"  # a recipient again: nothing to answer
    REFUSED = "refused"  # changed nothing, recorded; answer as for an unknown code
    RETRIED = "retried"  # Twilio delivered this refused SMS again: recorded once, answered once
    NOT_STAFF = "not_staff"  # no active staff member has this number: the generic answer


# Why an SMS acknowledgement was refused, as recorded (never the code: to anyone but its
# recipients it is a secret, and six digits hashed are found again in a millisecond).
REFUSAL_REASONS = {
    "unreadable": "no code could be read in the reply",
    "unknown_code": "no open or acknowledged alert has this code",
    "not_a_recipient": "the code was never sent to this phone",
    "may_not_acknowledge": "sent to this phone, but its owner may not acknowledge this alert",
    "too_many_refusals": f"{rules.SMS_ACK_REFUSALS_PER_DAY} refused ACKs from this phone in "
    "24 hours: SMS acknowledgement from it is paused",
}

# An SMS counts as sent to a phone once the provider has taken it. Not 'sending': the row is
# claimed but the provider may still refuse it (a bad number fails at once), and the moment
# between its acceptance and our record is one HTTP response, while a person needs far longer to
# read and answer; if the dispatcher dies in between, Twilio's status callback records it.
# Not 'undelivered' or 'failed': the carrier says the phone never had it.
_ACCEPTED_BY_PROVIDER = (MessageStatus.SENT, MessageStatus.DELIVERED)
_REFUSED_ACTION = "alert.sms_ack_refused"

_sms_log = logging.getLogger("stepdown.alerts.sms_ack")


@dataclass(frozen=True)
class SmsAck:
    """The outcome of an SMS acknowledgement; `alert` only when it was acknowledged (now or
    before) by this phone's owner, so nothing downstream can tell a refusal's alert."""

    outcome: SmsAckOutcome
    user: StaffUser | None = None
    alert: Alert | None = None
    reason: str | None = None


def acknowledge_by_sms(
    *,
    session: Session,
    from_number: str,
    code: str | None,
    now: datetime,
    message_sid: str | None = None,
) -> SmsAck:
    """An "ACK 482113" reply. It acknowledges only an alert whose code was sent to this very
    phone (an SMS of that alert, alone or in a bundle, addressed to it and taken by the
    provider), for an active staff member with this verified phone, at the alert's site, whose
    role may acknowledge. Anything else changes nothing and is recorded (who, which alert if the
    code named one, why; never the code), and gets the same answer as an unknown code."""
    users = list(
        session.exec(
            select(StaffUser)
            .where(StaffUser.phone_e164 == from_number, col(StaffUser.is_active).is_(True))
            .order_by(col(StaffUser.id))
        ).all()
    )
    if not users:
        _sms_log.info("ACK from a number of no active staff member: the generic answer")
        return SmsAck(SmsAckOutcome.NOT_STAFF)
    if message_sid and _refused_before(session, message_sid):
        return SmsAck(SmsAckOutcome.RETRIED, user=users[0])
    if _refusals_in_a_day(session, users, now) >= rules.SMS_ACK_REFUSALS_PER_DAY:
        return _refuse(session, users, "too_many_refusals", None, now, message_sid)
    if not code:
        return _refuse(session, users, "unreadable", None, now, message_sid)
    candidates = sorted(
        session.exec(
            select(Alert).where(
                Alert.ack_code == code,
                col(Alert.state).in_([AlertState.OPEN, AlertState.ACKNOWLEDGED]),
                # A routine task's code is in no SMS: it cannot be acknowledged by reply.
                col(Alert.level) != Level.ROUTINE,
            )
        ).all(),
        # Codes are unique among open alerts only: the open one first, then the latest.
        key=lambda a: (a.state != AlertState.OPEN, -(a.id or 0)),
    )
    reason, about = "unknown_code", None
    for alert in candidates:
        received = _sent_to_phone(session, alert, from_number)
        if not received:
            if about is None:
                reason, about = "not_a_recipient", alert
            continue
        user = _sms_acknowledger(session, alert, users, received)
        if user is None:
            reason, about = "may_not_acknowledge", alert
            continue
        if not acknowledge(session=session, alert=alert, user=user, channel="sms", now=now):
            return SmsAck(SmsAckOutcome.ALREADY_ACKNOWLEDGED, user=user, alert=alert)
        site = session.get(Site, alert.site_id) if alert.site_id else None
        locale = rules.staff_locale(site.country if site else None)
        outbox.enqueue(
            session,
            dedupe_key=f"ack-confirm:{alert.id}:{user.id}",
            category=MessageCategory.STAFF_NOTICE,
            kind=MessageKind.ALERT_ACK_CONFIRMED.value,
            to=from_number,
            locale=locale,
            body=render(
                MessageKind.ALERT_ACK_CONFIRMED,
                locale,
                code=_participant_code(session, alert),
            ),
            priority=PRIORITY_STAFF_ALERT,
            staff_user_id=user.id,
            now=now,
        )
        return SmsAck(SmsAckOutcome.ACKNOWLEDGED, user=user, alert=alert)
    return _refuse(session, users, reason, about, now, message_sid)


def _sent_to_phone(session: Session, alert: Alert, phone: str) -> set[int | None]:
    """The staff each of this alert's SMS to `phone` that the provider took was addressed to
    (a bundle's other alerts have rows of their own that follow the bundle's status)."""
    return set(
        session.exec(
            select(OutboxMessage.staff_user_id).where(
                OutboxMessage.ref == f"alert:{alert.id}",
                OutboxMessage.to_e164 == phone,
                col(OutboxMessage.status).in_(_ACCEPTED_BY_PROVIDER),
            )
        ).all()
    )


def _sms_acknowledger(
    session: Session, alert: Alert, users: list[StaffUser], received: set[int | None]
) -> StaffUser | None:
    """Who acknowledges from this phone: a staff member with it verified, whose role may
    acknowledge, at the alert's site today; the one the SMS was addressed to first (a shared
    on-call phone may have changed hands since: the phone received the code)."""
    members = (
        set(
            session.exec(
                select(SiteMembership.user_id).where(
                    SiteMembership.site_id == alert.site_id,
                    col(SiteMembership.user_id).in_([u.id for u in users]),
                )
            ).all()
        )
        if alert.site_id is not None
        else {u.id for u in users}
    )
    able = [
        u
        for u in users
        if u.is_phone_verified and has_permission(u.role, Permission.ALERT_ACK) and u.id in members
    ]
    able.sort(key=lambda u: u.id not in received)
    return able[0] if able else None


def _refused_before(session: Session, message_sid: str) -> bool:
    return (
        session.exec(
            select(audit.AuditEvent.id).where(
                audit.AuditEvent.entity == "inbound_sms",
                audit.AuditEvent.entity_id == message_sid,
                audit.AuditEvent.action == _REFUSED_ACTION,
            )
        ).first()
        is not None
    )


def _refusals_in_a_day(session: Session, users: list[StaffUser], now: datetime) -> int:
    return len(
        session.exec(
            select(audit.AuditEvent.id).where(
                audit.AuditEvent.action == _REFUSED_ACTION,
                col(audit.AuditEvent.actor_user_id).in_([u.id for u in users]),
                col(audit.AuditEvent.at) > now - timedelta(days=1),
            )
        ).all()
    )


def _refuse(
    session: Session,
    users: list[StaffUser],
    reason: str,
    about: Alert | None,
    now: datetime,
    message_sid: str | None,
) -> SmsAck:
    """Record a refused SMS acknowledgement: an audit row (who, from which inbound SMS, which
    alert the code named if any, why) and a line on that alert's timeline."""
    user = users[0]
    detail = {"reason": reason, "alert_id": about.id if about else None}
    audit.record(
        session=session,
        actor=f"staff:{user.id}",
        actor_user_id=user.id,
        action=_REFUSED_ACTION,
        entity="inbound_sms",
        entity_id=message_sid or "-",
        site_id=about.site_id if about else None,
        now=now,
        after={**detail, "channel": "sms", "staff_user_ids": [u.id for u in users]},
        reason=REFUSAL_REASONS[reason],
    )
    if about is not None:
        log(session, about, "sms_ack_refused", now, actor=f"staff:{user.id}", detail=detail)
    _sms_log.warning("SMS acknowledgement refused: staff %s, %s", user.id, detail)
    return SmsAck(SmsAckOutcome.REFUSED, user=user, reason=reason)


def _participant_code(session: Session, alert: Alert) -> str:
    participant = session.get(Participant, alert.participant_id) if alert.participant_id else None
    return participant.study_code if participant else f"SITE-{alert.site_id}"


# --- watchdog ------------------------------------------------------------------------------------


def overdue_escalations(*, session: Session, now: datetime, grace_minutes: int = 5) -> list[Alert]:
    """Open alerts more than `grace_minutes` past their next tier: the escalation engine stalled."""
    from datetime import timedelta

    return list(
        session.exec(
            select(Alert).where(
                col(Alert.state) == AlertState.OPEN,
                col(Alert.next_tier_at) < now - timedelta(minutes=grace_minutes),
            )
        ).all()
    )


# An alert SMS not with the provider this long after it was due: the dispatcher is stuck or
# dead, or the provider keeps refusing it.
UNSENT_AFTER = timedelta(seconds=60)


def unsent_alert_sms(
    *, session: Session, now: datetime, after: timedelta = UNSENT_AFTER
) -> list[tuple[Alert, OutboxMessage]]:
    """Open alerts (not the operators' own) with an urgent SMS still pending or sending `after`
    it was due: due at its not-before time if never tried, else at its first claim (retries
    push the not-before time on, so it alone would hide a message failing for minutes)."""
    from sqlalchemy import func, or_

    from notifications.models import PRIORITY_STAFF_NOTICE as URGENT_BELOW
    from notifications.models import MessageLog

    late = now - after
    rows = session.exec(
        select(OutboxMessage)
        .where(
            OutboxMessage.category == MessageCategory.STAFF_ALERT,
            col(OutboxMessage.priority) < URGENT_BELOW,
            col(OutboxMessage.status).in_([MessageStatus.PENDING, MessageStatus.SENDING]),
            col(OutboxMessage.ref).startswith("alert:"),
            or_(col(OutboxMessage.not_before_at) <= late, col(OutboxMessage.attempts) > 0),
        )
        .order_by(col(OutboxMessage.id))
        .limit(500)
    ).all()
    tried = [m.id for m in rows if m.attempts > 0]
    first_claim = dict(
        session.exec(
            select(MessageLog.message_id, func.min(MessageLog.at))
            .where(
                col(MessageLog.message_id).in_(tried),
                MessageLog.status == MessageStatus.SENDING,
            )
            .group_by(col(MessageLog.message_id))
        ).all()
        if tried
        else []
    )
    overdue: dict[int, OutboxMessage] = {}
    for m in rows:
        claimed = first_claim.get(m.id) if m.attempts > 0 and m.id is not None else None
        due = claimed if claimed is not None else m.not_before_at
        if due.replace(tzinfo=due.tzinfo or now.tzinfo) < late:
            overdue.setdefault(int((m.ref or "").split(":")[1]), m)
    if not overdue:
        return []
    alerts = session.exec(
        select(Alert)
        .where(
            col(Alert.id).in_(list(overdue)),
            col(Alert.state) == AlertState.OPEN,
            col(Alert.kind) != AlertKind.OPERATOR,  # its own SMS stuck would page about itself
        )
        .order_by(col(Alert.id))
    ).all()
    return [(a, overdue[a.id]) for a in alerts if a.id is not None]


def watchdog(*, session: Session, now: datetime) -> dict[str, int]:
    """Dead-man's switch of the escalation engine: an open alert more than 5 minutes past its
    next tier means the escalation job is not running; an alert SMS not with the provider 60 s
    after it was due means the dispatcher is not sending. Either pages the operators."""
    import logging

    unsent = unsent_alert_sms(session=session, now=now)
    for alert, message in unsent:
        logging.getLogger("stepdown.watchdog").error(
            "alert %s: SMS %s still %s %s after it was due",
            alert.id,
            message.id,
            message.status.value,
            UNSENT_AFTER,
        )
        open_alert(
            session=session,
            kind=AlertKind.OPERATOR,
            trigger_key=f"watchdog:unsent:{alert.id}:{alert.tier}:{alert.repeats_done}",
            participant=None,
            site_id=alert.site_id,
            summary=f"alert {alert.id}: its tier {alert.tier} SMS is not with the SMS provider "
            f"{int(UNSENT_AFTER.total_seconds())} s after it was due",
            now=now,
            actor="system:watchdog",
        )
    stalled = overdue_escalations(session=session, now=now)
    for alert in stalled:
        logging.getLogger("stepdown.watchdog").error(
            "alert %s is %s past its next tier",
            alert.id,
            now - alert.next_tier_at,  # type: ignore[operator]
        )
        open_alert(
            session=session,
            kind=AlertKind.OPERATOR,
            trigger_key=f"watchdog:{alert.id}:{alert.tier}:{alert.repeats_done}",
            participant=None,
            site_id=alert.site_id,
            summary=f"escalation of alert {alert.id} is stalled",
            now=now,
            actor="system:watchdog",
        )
    return {"stalled": len(stalled), "unsent_sms": len(unsent)}


def check_routes(*, session: Session, now: datetime) -> dict[str, int]:
    """Flag dead escalation routes to admins before an alert needs them (once a day per tier)."""
    dead = 0
    for site in session.exec(select(Site).where(col(Site.is_active).is_(True))):
        for tier in route_health(session, site):
            if not tier["is_dead"]:
                continue
            dead += 1
            open_alert(
                session=session,
                kind=AlertKind.DEAD_ROUTE,
                trigger_key=f"dead:{site.id}:{tier['route']}:{tier['tier']}:{now.date()}",
                participant=None,
                site_id=site.id,
                summary=f"{tier['route']} tier {tier['tier']} ({tier['recipients']}) reaches "
                "nobody with a verified phone",
                now=now,
                actor="system:routes",
            )
    return {"dead_tiers": dead}


def pending_alert_messages(session: Session, alert_id: int) -> list[OutboxMessage]:
    """The alert's SMS not yet handed to the provider."""
    return list(
        session.exec(
            select(OutboxMessage).where(
                OutboxMessage.ref == f"alert:{alert_id}",
                OutboxMessage.status == MessageStatus.PENDING,
            )
        ).all()
    )
