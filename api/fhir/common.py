"""The /fhir blueprint: bearer authentication (staff or participant app token), answers as
application/fhir+json, and every error as an OperationOutcome (4xx; a crash is a logged 500)."""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from server.auth.service import user_for_token
from server.auth.web import bearer_token
from server.clock import utcnow
from server.db import get_session
from server.errors import DomainError
from server.fhir.mapping import operation_outcome
from server.fhir.search import SearchError
from server.fhir.service import Scope
from server.participants import mobile

log = logging.getLogger(__name__)

bp = Blueprint("fhir", __name__, url_prefix="/fhir")


class ResourceTypeConverter(BaseConverter):
    """A resource type name (Observation): anything else is no route."""

    regex = r"[A-Z][A-Za-z]{1,40}"


class ResourceIdConverter(BaseConverter):
    """FHIR's id rule: letters, digits, '-' and '.', at most 64."""

    regex = r"[A-Za-z0-9.\-]{1,64}"


# Before any route of the blueprint is added (deferred functions run in the order recorded).
bp.record_once(
    lambda state: state.app.url_map.converters.update(
        fhir_type=ResourceTypeConverter, fhir_id=ResourceIdConverter
    )
)

FHIR_JSON = "application/fhir+json"
# Endpoints anyone may call: the CapabilityStatement (clients read it before they authenticate).
PUBLIC = {"fhir.metadata"}

# HTTP status → OperationOutcome issue type.
ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    409: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
}


def fhir_response(body: dict[str, Any], status: int = 200, **headers: str) -> Response:
    """A FHIR JSON answer."""
    resp = Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status=status,
        mimetype=FHIR_JSON,
    )
    resp.headers["Content-Type"] = f"{FHIR_JSON}; charset=utf-8"
    for key, value in headers.items():
        resp.headers[key.replace("_", "-")] = value
    return resp


def outcome(status: int, message: str, code: str | None = None) -> Response:
    """An error as an OperationOutcome."""
    return fhir_response(
        operation_outcome(code or ISSUE_CODES.get(status, "processing"), message), status
    )


def base_url() -> str:
    """The server's public base (canonical URLs and Bundle fullUrls)."""
    return str(current_app.config.get("PUBLIC_BASE_URL") or request.host_url).rstrip("/")


def scope() -> Scope:
    """The caller's scope, set by the blueprint's authentication."""
    return g.fhir_scope  # type: ignore[no-any-return]


class FhirUnauthorized(DomainError):
    status = 401
    code = "unauthorized"


@bp.before_request
def _authenticate() -> None:
    if request.endpoint in PUBLIC:
        return
    token = bearer_token()
    if token is None:
        raise FhirUnauthorized("send 'Authorization: Bearer <token>'")
    g.login_via_request = True  # never a session cookie on a token call
    session = get_session()
    now = utcnow()
    staff = user_for_token(session=session, token=token, now=now)
    if staff is not None:
        g.staff_user, g.api_token = staff
        g.fhir_scope = Scope(user=staff[0])
        return
    participant = mobile.participant_for_token(session=session, token=token, now=now)
    if participant is not None:
        g.participant, g.participant_token = participant
        g.fhir_scope = Scope(participant_id=participant[0].id)
        return
    raise FhirUnauthorized("the token is invalid, expired or revoked")


def _rollback() -> None:
    try:
        get_session().rollback()
    except Exception:  # pragma: no cover - best effort on a broken connection
        log.exception("rollback failed")


@bp.errorhandler(SearchError)
def _search_error(error: SearchError) -> Response:
    return outcome(400, str(error), error.code)


@bp.errorhandler(DomainError)
def _domain_error(error: DomainError) -> Response:
    _rollback()
    details = "; ".join(f"{k}: {', '.join(v)}" for k, v in error.fields.items())
    resp = outcome(error.status, error.message + (f" ({details})" if details else ""))
    if error.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="stepdown-fhir"'
    return resp


@bp.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    status = error.code or 500
    resp = outcome(status, error.description or error.name)
    for key, value in error.get_headers():
        if key.lower() not in ("content-type", "content-length"):
            resp.headers[key] = value
    return resp


@bp.errorhandler(Exception)
def _crash(error: Exception) -> Response:
    log.exception("unhandled error in the FHIR API")
    _rollback()
    return outcome(500, "internal error; it has been logged", "exception")
