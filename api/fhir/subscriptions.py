"""FHIR Subscriptions (R4 Backport, rest-hook): register, read, search, $status, delete.

Staff of a site read its subscriptions; its admins and coordinators register and end them. A
participant's app token sees none (404, empty searches)."""

from __future__ import annotations

from typing import Any

from flask import current_app, request

from api.common import commit
from api.fhir.common import base_url, bp, fhir_response, scope
from server.auth.models import StaffUser
from server.clock import utcnow
from server.db import get_session
from server.errors import NotFound, ValidationFailed
from server.fhir import search as fhir_search
from server.fhir import subscriptions
from server.fhir.models import FhirSubscription
from server.participants.models import Site

ID = "<fhir_id:resource_id>"


def _staff() -> StaffUser:
    user = scope().user
    if user is None:
        raise NotFound("not found")  # an app token: subscriptions are the care team's
    return user


def _numeric(resource_id: str) -> int:
    if not resource_id.isdigit() or len(resource_id) > 9:
        raise NotFound(f"Subscription/{resource_id} not found")
    return int(resource_id)


def _resource(sub: FhirSubscription) -> dict[str, Any]:
    site = get_session().get(Site, sub.site_id)
    return subscriptions.to_resource(sub, site_code=site.code if site else "", base_url=base_url())


@bp.route("/Subscription", methods=["POST"])
def create_subscription() -> Any:
    """Register a rest-hook endpoint; the answer (201) carries the signing secret, once."""
    user = _staff()
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise ValidationFailed("the body must be a FHIR Subscription in JSON", {"_body": ["JSON"]})
    wanted = subscriptions.parse_request(body)
    allow_http = bool(current_app.config.get("TESTING") or current_app.config.get("DEBUG"))
    sub, secret = subscriptions.create(
        session=get_session(),
        user=user,
        request=wanted,
        now=utcnow(),
        allow_http_localhost=allow_http,
    )
    resource = _resource(sub)
    commit()
    resource["extension"].append({"url": subscriptions.SECRET_EXTENSION, "valueString": secret})
    return fhir_response(resource, 201, Location=f"{base_url()}/fhir/Subscription/{sub.id}")


@bp.route("/Subscription", methods=["GET"])
def search_subscriptions() -> Any:
    """The subscriptions of your sites (`status` filters)."""
    query = fhir_search.parse("Subscription", list(request.args.items(multi=True)))
    user = scope().user
    found = subscriptions.visible(get_session(), user) if user is not None else []
    resources = [_resource(s) for s in found]
    resources = [
        r
        for r in resources
        if (not query.ids or r["id"] in query.ids)
        and (not query.statuses or r["status"] in query.statuses)
    ]
    page = resources[query.offset : query.offset + query.count]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "link": [{"relation": "self", "url": request.url}],
        "entry": [
            {
                "fullUrl": f"{base_url()}/fhir/Subscription/{r['id']}",
                "resource": r,
                "search": {"mode": "match"},
            }
            for r in page
        ],
    }
    if not bundle["entry"]:
        del bundle["entry"]
    return fhir_response(bundle)


@bp.route(f"/Subscription/{ID}", methods=["GET"])
def read_subscription(resource_id: str) -> Any:
    """One subscription of your sites (never its secret)."""
    sub = subscriptions.get(get_session(), _staff(), _numeric(resource_id))
    return fhir_response(_resource(sub))


@bp.route(f"/Subscription/{ID}/$status", methods=["GET"])
def subscription_status(resource_id: str) -> Any:
    """The Backport $status: state, events so far, and the delivery counts and last failure."""
    session = get_session()
    sub = subscriptions.get(session, _staff(), _numeric(resource_id))
    return fhir_response(
        subscriptions.status_parameters(
            sub, base_url=base_url(), delivery=subscriptions.counts(session, sub)
        )
    )


@bp.route(f"/Subscription/{ID}", methods=["DELETE"])
def delete_subscription(resource_id: str) -> Any:
    """End a subscription (admin or coordinator of its site): nothing more is sent."""
    subscriptions.end(
        session=get_session(), user=_staff(), subscription_id=_numeric(resource_id), now=utcnow()
    )
    commit()
    return ("", 204)
