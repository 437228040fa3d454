"""The system status page (administrators): readiness as `/readyz` decides it, the scheduler
leader and its standbys, the dispatchers, each one's last beat and last job results. The same
report as `stepdown status` (server/health/service.py)."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import login_required

from api.page_kit import require_page
from server.auth.rules import Permission
from server.clock import utcnow
from server.db import get_session
from server.health import rules
from server.health import service as health

bp = Blueprint("status_pages", __name__)


@bp.get("/admin/status")
@login_required
def status() -> str:
    """Readiness and every background process heard from in the last day."""
    require_page(Permission.MANAGE_SITES)
    report = health.status(get_session(), utcnow())
    return render_template("status.html", report=report, words=rules.words)
