"""Participants: the filtered list with search, and the enrollment form with its dry-run
timeline."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("participants_pages", __name__)


@bp.get("/participants")
@login_required
def participants() -> str:
    """The participants of my sites."""
    return render_template("placeholder.html", title="Participants")


@bp.route("/participants/new", methods=["GET", "POST"])
@login_required
def enroll() -> str:
    """Enroll a participant after seeing the planned timeline."""
    return render_template("placeholder.html", title="Enroll")
