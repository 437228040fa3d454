"""Questionnaire results for staff: a participant's scale scores over time."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from server.auth.rules import Permission
from server.auth.scoping import get_participant
from server.auth.web import require
from server.db import get_session
from server.surveys import service

blp = Blueprint("surveys", __name__, url_prefix="/api/v1", description="Questionnaires")


@blp.route("/participants/<int:participant_id>/scores")
@blp.response(200)
def scores(participant_id: int) -> dict[str, Any]:
    """Each questionnaire scale's scores over time (0-100 as the scoring manual defines)."""
    user = require(Permission.PARTICIPANT_READ)
    session = get_session()
    participant = get_participant(session=session, user=user, participant_id=participant_id)
    return {
        "participant_id": participant.id,
        "instruments": service.scores_over_time(session=session, participant=participant),
    }
