"""Adherence pages: per site and study, by event type and month, drill-down, CSV export."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("adherence_pages", __name__)


@bp.get("/adherence")
@login_required
def overview() -> str:
    """Adherence of my sites."""
    return render_template("placeholder.html", title="Adherence")
