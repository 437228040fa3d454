"""One JSON error envelope for every API failure: {"error": {"code", "message", "fields"}}."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import marshmallow as ma
from apispec import BasePlugin
from flask import Flask, Response, jsonify, request
from flask_smorest import Api
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException, InternalServerError

from notifications.messages import HealthInformationError
from server.db import get_session
from server.errors import DomainError, ValidationFailed

log = logging.getLogger(__name__)

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


class ErrorBodySchema(ma.Schema):
    code = ma.fields.String(
        metadata={"description": "machine-readable code, e.g. validation_error"}
    )
    message = ma.fields.String(metadata={"description": "what went wrong, in plain words"})
    fields_ = ma.fields.Dict(
        data_key="fields",
        keys=ma.fields.String(),
        values=ma.fields.List(ma.fields.String()),
        metadata={"description": "per-field messages"},
    )


class ErrorEnvelopeSchema(ma.Schema):
    error = ma.fields.Nested(ErrorBodySchema)


def envelope(
    status: int, message: str, fields: dict[str, Any] | None = None, code: str | None = None
) -> Response:
    """A JSON error response."""
    body = {
        "error": {
            "code": code or CODES.get(status, "error"),
            "message": message,
            "fields": fields or {},
        }
    }
    resp = jsonify(body)
    resp.status_code = status
    return resp


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """webargs/marshmallow nested messages → {"field.sub": ["msg", ...]}."""
    out: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                out[name] = list(value)
            else:
                out.update(_flatten(value, name))
    elif isinstance(messages, list):
        out[prefix or "_schema"] = [str(m) for m in messages]
    else:
        out[prefix or "_schema"] = [str(messages)]
    return out


def _webargs_fields(data: dict[str, Any]) -> dict[str, list[str]]:
    messages = data.get("messages") or data.get("errors") or {}
    fields: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        # Drop the location level (json/query/path): the client needs the field name.
        for location_messages in messages.values():
            fields.update(_flatten(location_messages))
    return fields


def _summary(fields: dict[str, list[str]]) -> str:
    parts = [f"{name}: {'; '.join(msgs)}" for name, msgs in sorted(fields.items())]
    return "invalid input: " + " | ".join(parts) if parts else "invalid input"


def validation_failed(messages: Any) -> ValidationFailed:
    """marshmallow's nested error messages as the 422 the API answers (fields dotted)."""
    fields = _flatten(messages)
    return ValidationFailed(_summary(fields), fields)


def _rollback() -> None:
    try:
        get_session().rollback()
    except Exception:  # pragma: no cover - best effort on a broken connection
        log.exception("rollback failed")


def wants_json() -> bool:
    """API and machine endpoints answer errors in JSON; pages answer in HTML."""
    path = request.path
    return (
        path.startswith("/api/")
        or path.startswith("/twilio/")
        or path.startswith("/oncall/feed/")  # calendar apps, not people
        or path == "/healthz"
        or (request.accept_mimetypes.best == "application/json")
    )


# Sign-in calls that need no token: a wrong secret is 401, too many tries 429.
SIGN_IN_OPERATIONS = {("post", "/api/v1/auth/token"), ("post", "/api/v1/mobile/activate")}
_WRITES = {"post", "put", "patch", "delete"}


def error_statuses(method: str, path: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from what every operation of its kind does.

    A body: 400 (not JSON, not UTF-8, nested too deep), 413 (too large), 422 (invalid fields).
    Query parameters: 422. A token: 401 (missing, wrong, expired). A staff operation: 403 (the
    role may not) and 404 (outside your sites; a participant's app token also gets 404 there).
    A path id: 404. A write: 409 (clashes with the current state). Sign-in: 401 and 429.
    """
    statuses: set[int] = set()
    if "requestBody" in operation:
        statuses |= {400, 413, 422}
    if any(p.get("in") == "query" for p in operation.get("parameters", [])):
        statuses.add(422)
    is_public = operation.get("security") == []
    if not is_public:
        statuses.add(401)
        if not path.startswith("/api/v1/mobile/"):
            statuses |= {403, 404}
    if "{" in path:
        statuses.add(404)
    if method in _WRITES:
        statuses.add(409)
    if (method, path) in SIGN_IN_OPERATIONS:
        statuses |= {401, 429}
    return statuses


class ErrorResponsesPlugin(BasePlugin):
    """Documents each operation's error statuses, every one with the error envelope; a success
    documented without a body is said to be JSON (the media type is then checked too)."""

    def operation_helper(
        self, path: str | None = None, operations: dict[str, Any] | None = None, **_: Any
    ) -> None:
        for method, operation in (operations or {}).items():
            if method not in {"get", "put", "post", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                if (
                    str(status).startswith("2")
                    and str(status) != "204"
                    and isinstance(response, dict)
                    and "content" not in response
                ):
                    response["content"] = {"application/json": {"schema": {}}}
            for status in sorted(error_statuses(method, path or "", operation)):
                # flask-smorest registers one component per HTTP status (NOT_FOUND, …).
                responses.setdefault(str(status), HTTPStatus(status).name)


class StepdownApi(Api):
    """flask-smorest Api answering errors in Stepdown's envelope."""

    ERROR_SCHEMA = ErrorEnvelopeSchema
    # Each operation lists its real error statuses (ErrorResponsesPlugin); a catch-all `default`
    # would make any status look documented.
    DEFAULT_ERROR_RESPONSE_NAME = None

    def __init__(self, app: Flask | None = None, **kwargs: Any) -> None:
        spec_kwargs = kwargs.pop("spec_kwargs", None) or {}
        spec_kwargs.setdefault("extra_plugins", [ErrorResponsesPlugin()])
        super().__init__(app, spec_kwargs=spec_kwargs, **kwargs)

    def handle_http_exception(self, error: HTTPException) -> Any:
        """Render any HTTP error as the envelope (HTML pages keep Flask's default)."""
        if not wants_json():
            return _html_error(error)
        status = error.code or 500
        data = getattr(error, "data", None) or {}
        headers = data.get("headers") or {}
        if status == 500:
            _rollback()
            resp = envelope(500, "internal error; it has been logged")
        elif status in (400, 422) and ("messages" in data or "errors" in data):
            fields = _webargs_fields(data)
            if status == 400 and any("Invalid JSON" in " ".join(v) for v in fields.values()):
                resp = envelope(400, "the request body is not valid JSON", fields)
            else:
                resp = envelope(422, _summary(fields), fields)
        else:
            message = data.get("message") or error.description or error.name
            resp = envelope(status, str(message))
        # Keep what the exception says about itself: Allow on 405, Retry-After on 429 …
        for k, v in error.get_headers():
            if k.lower() not in ("content-type", "content-length"):
                resp.headers[k] = v
        for k, v in headers.items():
            resp.headers[k] = v
        return resp


def _html_error(error: HTTPException) -> Any:
    """A page's HTTP error as the HTML error page (redirects and the like pass through)."""
    if error.code is None or error.code < 400 or error.code >= 500:
        return error
    from api.page_kit import error_page

    if error.code == 400 and "CSRF" in (error.description or ""):
        message = "The form expired or was sent from elsewhere: reload the page and try again."
    elif error.code == 404:
        message = "There is nothing here, or it is not one of your sites."
    elif error.code == 403:
        message = "Your role does not allow this."
    else:
        message = error.description or error.name
    body, status = error_page(error.code, message)
    resp = Response(body, status=status, mimetype="text/html")
    for k, v in error.get_headers() or []:
        if k.lower() not in ("content-type", "content-length"):
            resp.headers[k] = v
    return resp


def register(app: Flask) -> None:
    """Map domain errors, integrity errors and crashes to the envelope."""

    @app.errorhandler(DomainError)
    def _domain(error: DomainError) -> Any:
        _rollback()
        if not wants_json():
            from api.page_kit import error_page

            return error_page(error.status, error.message, next(iter(error.fields), None))
        return envelope(error.status, error.message, error.fields, error.code)

    @app.errorhandler(HealthInformationError)
    def _sms_guard(error: HealthInformationError) -> Any:
        # The inputs that reach an SMS are checked before anything is written (a study code, for
        # one); a text that still fails the guard is refused with nothing saved, never a 500.
        _rollback()
        log.error("an SMS failed the health-information guard inside a request: %s", error)
        message = (
            "nothing was saved: a text message this change would send failed the "
            "health-information check (no health word, drug or trial name may go by SMS)"
        )
        if not wants_json():
            from api.page_kit import error_page

            return error_page(422, message)
        return envelope(422, message, code="sms_guard")

    @app.errorhandler(IntegrityError)
    def _integrity(error: IntegrityError) -> Any:
        _rollback()
        log.info("integrity error: %s", error.orig)
        if not wants_json():
            from api.page_kit import error_page

            return error_page(409, "the change conflicts with existing data: reload and retry")
        return envelope(409, "the change conflicts with existing data")

    @app.errorhandler(Exception)
    def _crash(error: Exception) -> Any:
        if isinstance(error, HTTPException):
            return error
        log.exception("unhandled error")
        _rollback()
        if wants_json():
            return envelope(500, "internal error; it has been logged")
        return InternalServerError()
