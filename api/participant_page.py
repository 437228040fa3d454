"""One participant's page: timeline, ctDNA chart, QoL scores, messages, alerts, audit history."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import login_required

bp = Blueprint("participant_page", __name__)


@bp.get("/participants/<int:participant_id>")
@login_required
def show(participant_id: int) -> str:
    """A participant's page."""
    return render_template("placeholder.html", title=f"Participant {participant_id}")
