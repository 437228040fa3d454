"""FHIR Subscriptions (R4 Subscriptions Backport, rest-hook): register, list, end, and the
delivery job.

How a notification travels. The job `fhir.subscriptions` (every 10 s) first *queues*: for each
live subscription it looks for alerts opened (topic `alert`) or results accepted (topic `result`)
at its site since the subscription began (within the last day) that have no notification yet, and
inserts one row each (unique on subscription and focus: a second pass inserts nothing), numbering
them in order (event-number). It then *delivers* the due rows, oldest first, each as a signed POST
of a notification Bundle, with retries and backoff (server/fhir/rules.py) and the subscription's
health (failure count, last error) kept for `$status`.

Why the job looks for events rather than being told by the alert or result transaction: those
transactions are the ones that queue the nurse's SMS, and they stay exactly as they were (no new
row, no new failure mode); a webhook that hangs costs the delivery job a timeout, never the SMS
dispatcher, which runs in its own thread and reads only the SMS outbox. The price is up to 10 s
of latency on a webhook.

Payloads are `id-only` (the default: the Bundle names the focus, e.g. `Flag/12`, the receiver
reads it from /fhir with its own token, so no health data travels in the notification) or
`empty`; `full-resource` is not offered.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, has_app_context
from pydantic import ValidationError
from sqlmodel import Session, col, func, select

from server import audit
from server.alerts.models import Alert
from server.auth.models import Role, SiteMembership, StaffUser
from server.errors import Forbidden, NotFound, ValidationFailed
from server.fhir import rules
from server.fhir.models import (
    DeliveryStatus,
    FhirNotification,
    FhirSubscription,
    NotificationType,
    PayloadContent,
    SubscriptionStatus,
    Topic,
)
from server.participants.models import Site
from server.results.models import LabResult, ResultStatus

log = logging.getLogger("stepdown.fhir.subscriptions")

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
TOPIC_URLS = {
    Topic.ALERT: "urn:stepdown:fhir:topic:alert",
    Topic.RESULT: "urn:stepdown:fhir:topic:result",
}
SITE_EXTENSION = "urn:stepdown:extension:site"
SECRET_EXTENSION = "urn:stepdown:extension:signing-secret"
# Roles that may register or end a site's subscriptions.
MANAGERS = (Role.ADMIN, Role.COORDINATOR)
# How far back the queuing pass looks for events (older ones were queued long ago, or predate
# the subscription).
LOOK_BACK = timedelta(days=1)
BATCH = 20
TIMEOUT_SECONDS = 5.0
# A delivery pass stops starting new POSTs after this long (the next tick goes on).
PASS_BUDGET_SECONDS = 20.0
MIN_HEARTBEAT_SECONDS = 60


# --- registering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What a client asked for in its Subscription resource."""

    topic: Topic
    endpoint: str
    payload: PayloadContent
    heartbeat_seconds: int | None
    reason: str
    site_code: str | None


def _extensions(element: Any) -> list[Any]:
    return list(getattr(element, "extension", None) or [])


def parse_request(data: Any) -> Request:
    """Validate a Subscription (R4 + Backport) and read what we support; 422 naming the element."""
    from fhir.resources.R4B.subscription import Subscription

    if not isinstance(data, dict) or data.get("resourceType") != "Subscription":
        raise ValidationFailed(
            "the body must be a FHIR Subscription", {"resourceType": ["must be Subscription"]}
        )
    try:
        sub = Subscription.model_validate(data)
    except ValidationError as exc:
        fields: dict[str, list[str]] = {}
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "_schema"
            fields.setdefault(where, []).append(err["msg"])
        raise ValidationFailed("not a valid FHIR R4 Subscription", fields) from None
    if sub.status not in ("requested", "active"):
        raise ValidationFailed("a new subscription is requested", {"status": ["must be requested"]})
    topics = {url: topic for topic, url in TOPIC_URLS.items()}
    if sub.criteria not in topics:
        raise ValidationFailed(
            "unknown topic",
            {"criteria": [f"must be one of {', '.join(sorted(topics))}"]},
        )
    if getattr(sub, "criteria__ext", None) is not None:
        raise ValidationFailed("filters are not supported", {"_criteria": ["not supported"]})
    channel = sub.channel
    if channel.type != "rest-hook":
        raise ValidationFailed("only rest-hook", {"channel.type": ["must be rest-hook"]})
    if not channel.endpoint:
        raise ValidationFailed("an endpoint is required", {"channel.endpoint": ["required"]})
    if channel.payload not in (None, "application/fhir+json", "application/json"):
        raise ValidationFailed(
            "payloads are JSON", {"channel.payload": ["must be application/fhir+json"]}
        )
    content = PayloadContent.ID_ONLY
    for ext in _extensions(getattr(channel, "payload__ext", None)):
        if ext.url == f"{BACKPORT}/backport-payload-content":
            try:
                content = PayloadContent(ext.valueCode)
            except ValueError:
                raise ValidationFailed(
                    "unsupported payload content",
                    {"channel._payload": ["id-only or empty (full-resource is not offered)"]},
                ) from None
    heartbeat = None
    for ext in _extensions(channel):
        if ext.url == f"{BACKPORT}/backport-heartbeat-period":
            heartbeat = int(ext.valueUnsignedInt or 0) or None
            if heartbeat is not None and heartbeat < MIN_HEARTBEAT_SECONDS:
                raise ValidationFailed(
                    "heartbeat too frequent",
                    {"channel.heartbeatPeriod": [f"at least {MIN_HEARTBEAT_SECONDS} seconds"]},
                )
    site_code = next(
        (e.valueString for e in _extensions(sub) if e.url == SITE_EXTENSION and e.valueString),
        None,
    )
    return Request(
        topic=topics[sub.criteria],
        endpoint=str(channel.endpoint),
        payload=content,
        heartbeat_seconds=heartbeat,
        reason=(sub.reason or "")[:200],
        site_code=site_code,
    )


def _site_for(session: Session, user: StaffUser, site_code: str | None) -> Site:
    sites = session.exec(
        select(Site)
        .join(SiteMembership, col(SiteMembership.site_id) == col(Site.id))
        .where(SiteMembership.user_id == user.id)
        .order_by(col(Site.id))
    ).all()
    if site_code is None:
        if len(sites) != 1:
            raise ValidationFailed(
                "name the site",
                {"extension": [f"add {{'url': '{SITE_EXTENSION}', 'valueString': <site code>}}"]},
            )
        return sites[0]
    for site in sites:
        if site.code == site_code:
            return site
    raise NotFound("site not found")


def create(
    *,
    session: Session,
    user: StaffUser,
    request: Request,
    now: datetime,
    allow_http_localhost: bool,
) -> tuple[FhirSubscription, str]:
    """Register a site's endpoint (admin or coordinator of the site); returns the subscription
    and its signing secret, which is never shown again. Audited."""
    if user.role not in MANAGERS:
        raise Forbidden(f"your role ({user.role.value}) may not register subscriptions")
    site = _site_for(session, user, request.site_code)
    problem = rules.endpoint_problem(request.endpoint, allow_http_localhost=allow_http_localhost)
    if problem:
        raise ValidationFailed(f"channel.endpoint: {problem}", {"channel.endpoint": [problem]})
    secret = secrets.token_hex(32)
    sub = FhirSubscription(
        site_id=site.id,  # type: ignore[arg-type]
        topic=request.topic,
        endpoint=request.endpoint,
        secret=secret,
        payload=request.payload,
        heartbeat_seconds=request.heartbeat_seconds,
        reason=request.reason or None,
        status=SubscriptionStatus.REQUESTED,
        created_by_user_id=user.id,
        created_at=now,
        updated_at=now,
    )
    session.add(sub)
    session.flush()
    audit.record(
        session=session,
        actor=f"staff:{user.id}",
        actor_user_id=user.id,
        action="fhir_subscription.create",
        entity="fhir_subscription",
        entity_id=sub.id,
        site_id=site.id,
        after=audit.snapshot(sub, ("topic", "endpoint", "payload", "heartbeat_seconds", "status")),
        now=now,
    )
    return sub, secret


def visible(session: Session, user: StaffUser) -> list[FhirSubscription]:
    """The subscriptions of the user's sites."""
    return list(
        session.exec(
            select(FhirSubscription)
            .where(
                col(FhirSubscription.site_id).in_(
                    select(SiteMembership.site_id).where(SiteMembership.user_id == user.id)
                )
            )
            .order_by(col(FhirSubscription.id))
        ).all()
    )


def get(session: Session, user: StaffUser, subscription_id: int) -> FhirSubscription:
    """One subscription of the user's sites, or NotFound."""
    for sub in visible(session, user):
        if sub.id == subscription_id:
            return sub
    raise NotFound("subscription not found")


def end(*, session: Session, user: StaffUser, subscription_id: int, now: datetime) -> None:
    """Turn a subscription off and cancel what it had left to deliver. Audited."""
    sub = get(session, user, subscription_id)
    if user.role not in MANAGERS:
        raise Forbidden(f"your role ({user.role.value}) may not end subscriptions")
    if sub.status == SubscriptionStatus.OFF:
        return
    before = audit.snapshot(sub, ("status",))
    sub.status, sub.ended_at, sub.updated_at = SubscriptionStatus.OFF, now, now
    session.add(sub)
    for row in session.exec(
        select(FhirNotification).where(
            FhirNotification.subscription_id == sub.id,
            FhirNotification.status == DeliveryStatus.PENDING,
        )
    ):
        row.status = DeliveryStatus.CANCELLED
        session.add(row)
    audit.record(
        session=session,
        actor=f"staff:{user.id}",
        actor_user_id=user.id,
        action="fhir_subscription.end",
        entity="fhir_subscription",
        entity_id=sub.id,
        site_id=sub.site_id,
        before=before,
        after=audit.snapshot(sub, ("status",)),
        now=now,
    )
    session.flush()


# --- resources -----------------------------------------------------------------------------------


def _instant(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def to_resource(sub: FhirSubscription, *, site_code: str, base_url: str) -> dict[str, Any]:
    """The Subscription as FHIR R4 with the Backport extensions (never its secret)."""
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": sub.endpoint,
        "payload": "application/fhir+json",
        "_payload": {
            "extension": [
                {"url": f"{BACKPORT}/backport-payload-content", "valueCode": sub.payload.value}
            ]
        },
        "extension": [
            {"url": f"{BACKPORT}/backport-timeout", "valueUnsignedInt": int(TIMEOUT_SECONDS)}
        ],
    }
    if sub.heartbeat_seconds:
        channel["extension"].append(
            {
                "url": f"{BACKPORT}/backport-heartbeat-period",
                "valueUnsignedInt": sub.heartbeat_seconds,
            }
        )
    out: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": str(sub.id),
        "meta": {
            "lastUpdated": _instant(sub.updated_at),
            "profile": [f"{BACKPORT}/backport-subscription"],
        },
        "extension": [{"url": SITE_EXTENSION, "valueString": site_code}],
        "status": sub.status.value,
        "reason": sub.reason or f"{sub.topic.value} notifications for {site_code}",
        "criteria": TOPIC_URLS[sub.topic],
        "channel": channel,
    }
    if sub.last_error and sub.status == SubscriptionStatus.ERROR:
        out["error"] = sub.last_error
    if sub.ended_at:
        out["end"] = _instant(sub.ended_at)
    return out


def counts(session: Session, sub: FhirSubscription) -> dict[str, int]:
    """How many of the subscription's notifications are in each delivery state."""
    rows = session.exec(
        select(FhirNotification.status, func.count())
        .where(FhirNotification.subscription_id == sub.id)
        .group_by(col(FhirNotification.status))
    ).all()
    found = {status.value if hasattr(status, "value") else str(status): n for status, n in rows}
    return {s.value: int(found.get(s.value, 0)) for s in DeliveryStatus}


def status_parameters(
    sub: FhirSubscription,
    *,
    base_url: str,
    kind: NotificationType | str = "query-status",
    events: list[FhirNotification] | None = None,
    delivery: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The Backport SubscriptionStatus (a Parameters resource in R4): in every notification, and
    as `$status` with the delivery counts and the last failure."""
    params: list[dict[str, Any]] = [
        {
            "name": "subscription",
            "valueReference": {"reference": f"{base_url}/fhir/Subscription/{sub.id}"},
        },
        {"name": "topic", "valueCanonical": TOPIC_URLS[sub.topic]},
        {"name": "status", "valueCode": sub.status.value},
        {"name": "type", "valueCode": str(getattr(kind, "value", kind))},
        {"name": "events-since-subscription-start", "valueString": str(sub.events_since_start)},
    ]
    for event in events or []:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.event_number)},
            {"name": "timestamp", "valueInstant": _instant(event.event_at)},
        ]
        if event.focus and sub.payload != PayloadContent.EMPTY:
            parts.append(
                {"name": "focus", "valueReference": {"reference": f"{base_url}/fhir/{event.focus}"}}
            )
        params.append({"name": "notification-event", "part": parts})
    if sub.last_error and sub.status == SubscriptionStatus.ERROR:
        params.append({"name": "error", "valueCodeableConcept": {"text": sub.last_error}})
    if delivery is not None:
        # Not in the Backport: what an operator needs to see a failing endpoint.
        for name, value in delivery.items():
            params.append({"name": f"stepdown-{name}", "valueInteger": value})
        params.append({"name": "stepdown-consecutive-failures", "valueInteger": sub.failure_count})
        if sub.last_failure_at:
            params.append(
                {"name": "stepdown-last-failure", "valueInstant": _instant(sub.last_failure_at)}
            )
        if sub.last_delivered_at:
            params.append(
                {"name": "stepdown-last-delivered", "valueInstant": _instant(sub.last_delivered_at)}
            )
    return {
        "resourceType": "Parameters",
        "id": uuid.uuid4().hex,
        "meta": {"profile": [f"{BACKPORT}/backport-subscription-status-r4"]},
        "parameter": params,
    }


def notification_bundle(
    sub: FhirSubscription, row: FhirNotification, *, base_url: str, now: datetime
) -> dict[str, Any]:
    """The Bundle POSTed to the endpoint: a history Bundle whose first entry is the status."""
    status = status_parameters(
        sub,
        base_url=base_url,
        kind=row.kind,
        events=[row] if row.kind == NotificationType.EVENT else [],
    )
    return {
        "resourceType": "Bundle",
        "id": uuid.uuid4().hex,
        "meta": {"profile": [f"{BACKPORT}/backport-subscription-notification-r4"]},
        "type": "history",
        "timestamp": _instant(now),
        "entry": [
            {
                "fullUrl": f"urn:uuid:{status['id']}",
                "resource": status,
                "request": {
                    "method": "GET",
                    "url": f"{base_url}/fhir/Subscription/{sub.id}/$status",
                },
                "response": {"status": "200"},
            }
        ],
    }


# --- the delivery job ----------------------------------------------------------------------------

Poster = Callable[[str, bytes, dict[str, str], float], int]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is a failure: we POST to the registered URL only


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST and return the HTTP status (an error status too); network failures raise OSError."""
    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - https or local http only (rules.endpoint_problem)
    try:
        with opener.open(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _next_event_number(sub: FhirSubscription) -> int:
    sub.events_since_start += 1
    return sub.events_since_start


def queue(*, session: Session, now: datetime) -> dict[str, int]:
    """Insert the notifications due: handshakes, events not yet queued, heartbeats."""
    queued = {"handshakes": 0, "events": 0, "heartbeats": 0}
    live = session.exec(
        select(FhirSubscription)
        .where(col(FhirSubscription.status) != SubscriptionStatus.OFF)
        .order_by(col(FhirSubscription.id))
        .with_for_update(skip_locked=True)
    ).all()
    for sub in live:
        sub_id: int = sub.id  # type: ignore[assignment]
        if sub.status == SubscriptionStatus.REQUESTED and not _has(
            session, sub_id, NotificationType.HANDSHAKE
        ):
            _add(session, sub, NotificationType.HANDSHAKE, None, now, 0, now)
            queued["handshakes"] += 1
        since = max(sub.created_at, now - LOOK_BACK)
        done = set(
            session.exec(
                select(FhirNotification.focus).where(
                    FhirNotification.subscription_id == sub_id,
                    col(FhirNotification.focus).is_not(None),
                )
            ).all()
        )
        fresh = 0
        for focus, at in _events(session, sub, since):
            if focus in done:
                continue
            _add(session, sub, NotificationType.EVENT, focus, at, _next_event_number(sub), now)
            fresh += 1
        queued["events"] += fresh
        # A heartbeat only when the endpoint has heard nothing for the period and nothing waits.
        if (
            sub.heartbeat_seconds
            and sub.status == SubscriptionStatus.ACTIVE
            and not fresh
            and (sub.last_delivered_at or sub.created_at)
            <= now - timedelta(seconds=sub.heartbeat_seconds)
            and not _has_pending(session, sub_id)
        ):
            _add(session, sub, NotificationType.HEARTBEAT, None, now, sub.events_since_start, now)
            queued["heartbeats"] += 1
        session.add(sub)
    session.flush()
    return queued


def _has(session: Session, sub_id: int, kind: NotificationType) -> bool:
    stmt = select(FhirNotification.id).where(
        FhirNotification.subscription_id == sub_id, FhirNotification.kind == kind
    )
    return session.exec(stmt).first() is not None


def _has_pending(session: Session, sub_id: int) -> bool:
    stmt = select(FhirNotification.id).where(
        FhirNotification.subscription_id == sub_id,
        FhirNotification.status == DeliveryStatus.PENDING,
    )
    return session.exec(stmt).first() is not None


def _add(
    session: Session,
    sub: FhirSubscription,
    kind: NotificationType,
    focus: str | None,
    at: datetime,
    number: int,
    now: datetime,
) -> None:
    session.add(
        FhirNotification(
            subscription_id=sub.id,  # type: ignore[arg-type]
            kind=kind,
            event_number=number,
            focus=focus,
            event_at=at,
            next_attempt_at=now,
            created_at=now,
        )
    )


def _events(session: Session, sub: FhirSubscription, since: datetime) -> list[tuple[str, datetime]]:
    """(focus, when) of the site's events of the subscription's topic since `since`, oldest
    first."""
    if sub.topic == Topic.ALERT:
        alerts = session.exec(
            select(Alert.id, Alert.opened_at)
            .where(
                Alert.site_id == sub.site_id,
                col(Alert.participant_id).is_not(None),
                col(Alert.opened_at) >= since,
            )
            .order_by(col(Alert.opened_at), col(Alert.id))
        ).all()
        return [(f"Flag/{alert_id}", at) for alert_id, at in alerts]
    results = session.exec(
        select(LabResult.id, LabResult.received_at, LabResult.reviewed_at)
        .where(
            LabResult.site_id == sub.site_id,
            col(LabResult.participant_id).is_not(None),
            LabResult.status == ResultStatus.ACCEPTED,
            (col(LabResult.received_at) >= since) | (col(LabResult.reviewed_at) >= since),
        )
        .order_by(col(LabResult.id))
    ).all()
    # A quarantined result attached later counts from when it was accepted.
    return sorted(
        (
            (f"Observation/result-{rid}", max(received, reviewed or received))
            for rid, received, reviewed in results
        ),
        key=lambda pair: pair[1],
    )


def deliver(
    *,
    session: Session,
    now: datetime,
    base_url: str,
    post: Poster = http_post,
    budget_seconds: float = PASS_BUDGET_SECONDS,
) -> dict[str, int]:
    """POST the due notifications, oldest first; one failure per subscription per pass (a dead
    endpoint costs one timeout, not a batch of them); stop starting POSTs after the budget."""
    stats = {"delivered": 0, "failed": 0, "gave_up": 0}
    due = session.exec(
        select(FhirNotification, FhirSubscription)
        .join(FhirSubscription, col(FhirSubscription.id) == col(FhirNotification.subscription_id))
        .where(
            FhirNotification.status == DeliveryStatus.PENDING,
            col(FhirNotification.next_attempt_at) <= now,
            col(FhirSubscription.status) != SubscriptionStatus.OFF,
        )
        .order_by(
            col(FhirNotification.kind) != NotificationType.HANDSHAKE, col(FhirNotification.id)
        )
        .limit(BATCH)
        .with_for_update(skip_locked=True, of=FhirNotification)  # type: ignore[arg-type]
    ).all()
    started = time.monotonic()
    failed_subs: set[int] = set()
    for row, sub in due:
        if time.monotonic() - started > budget_seconds:
            break
        if sub.id in failed_subs:
            continue
        if sub.status == SubscriptionStatus.REQUESTED and row.kind != NotificationType.HANDSHAKE:
            continue  # events wait for the handshake
        body = json.dumps(
            notification_bundle(sub, row, base_url=base_url, now=now), separators=(",", ":")
        ).encode()
        headers = {
            "Content-Type": "application/fhir+json; charset=utf-8",
            rules.SIGNATURE_HEADER: rules.sign(sub.secret, int(now.timestamp()), body),
            "X-Stepdown-Subscription": str(sub.id),
            "X-Stepdown-Event-Number": str(row.event_number),
        }
        row.attempts += 1
        error: str | None = None
        try:
            code = post(sub.endpoint, body, headers, TIMEOUT_SECONDS)
            row.last_status_code = code
            if not 200 <= code < 300:
                error = f"HTTP {code}"
        except (OSError, ValueError) as exc:  # refused, reset, timed out, bad URL
            error = f"{type(exc).__name__}: {exc}"[:300]
        if error is None:
            row.status, row.delivered_at, row.last_error = DeliveryStatus.DELIVERED, now, None
            sub.status = SubscriptionStatus.ACTIVE
            sub.failure_count, sub.last_delivered_at = 0, now
            stats["delivered"] += 1
        else:
            failed_subs.add(sub.id)  # type: ignore[arg-type]
            row.last_error = error
            if row.attempts >= rules.MAX_ATTEMPTS:
                row.status = DeliveryStatus.FAILED
                stats["gave_up"] += 1
            row.next_attempt_at = now + timedelta(seconds=rules.backoff_seconds(row.attempts))
            sub.status = SubscriptionStatus.ERROR
            sub.failure_count += 1
            sub.last_error, sub.last_failure_at = (
                f"{row.kind.value} #{row.event_number}: {error}"[:300],
                now,
            )
            stats["failed"] += 1
            log.warning("fhir subscription %s: %s", sub.id, error)
        sub.updated_at = now
        session.add(row)
        session.add(sub)
    session.flush()
    return stats


def run(*, session: Session, now: datetime) -> dict[str, int]:
    """The scheduler job: queue what is new, then deliver what is due."""
    base_url = (
        str(current_app.config.get("PUBLIC_BASE_URL", "")).rstrip("/") if has_app_context() else ""
    )
    return {
        **queue(session=session, now=now),
        **deliver(session=session, now=now, base_url=base_url),
    }
