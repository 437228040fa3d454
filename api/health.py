"""Liveness and readiness: /healthz answers 200 when the database answers."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Blueprint, Response, jsonify

from server.db import get_session

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
