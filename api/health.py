"""Liveness and readiness.

`/healthz` is the cheap liveness check (the database answers). `/readyz` says whether Stepdown can
keep its promises right now: a scheduler leader has run a job within 2 minutes, an SMS dispatcher
is alive, no staff alert SMS has waited more than 60 s, the database takes writes. 503 names each
reason. Both are public (a load balancer or an outside monitor asks them) and show no host, phone
or patient: the admin status page and `stepdown status` show the processes.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify

from server.clock import utcnow
from server.db import get_session
from server.health import service as health

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    """200 with the database reachable, 503 otherwise."""
    try:
        get_session().exec(sa.text("SELECT 1"))  # type: ignore[call-overload]
    except Exception:
        log.exception("health check: database unreachable")
        return jsonify({"status": "unavailable", "database": "unreachable"}), 503
    return jsonify({"status": "ok", "database": "ok"}), 200


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when ready; 503 with every reason when not (see the module docstring)."""
    try:
        found = health.readiness(get_session(), utcnow())
    except Exception:
        log.exception("readiness check: database unreachable")
        body = {"status": "not_ready", "reasons": ["the database is unreachable"]}
        response = jsonify({**body, "problems": [{"code": "database_unreachable"}]})
        response.headers["Retry-After"] = "10"
        return response, 503
    response = jsonify(found.as_dict())
    if not found.is_ready:
        response.headers["Retry-After"] = "10"
        return response, 503
    return response, 200
