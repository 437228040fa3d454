"""Small helpers shared by the API blueprints."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from server.auth.models import StaffUser
from server.auth.rules import Permission, has_permission
from server.db import get_session
from server.participants.models import Participant, Site
from server.participants.rules import mask_phone
from server.protocols.models import Study


def commit() -> None:
    """Commit the request's session (the request boundary)."""
    get_session().commit()


def participant_dicts(
    session: Session, user: StaffUser, participants: list[Participant]
) -> list[dict[str, Any]]:
    """Participants as dicts for ParticipantSchema, with study key and site code, phones masked
    for roles that may not see them."""
    study_ids = {p.study_id for p in participants}
    site_ids = {p.site_id for p in participants}
    studies = (
        {s.id: s.key for s in session.exec(select(Study).where(Study.id.in_(study_ids)))}  # type: ignore[union-attr]
        if study_ids
        else {}
    )
    sites = (
        {s.id: s.code for s in session.exec(select(Site).where(Site.id.in_(site_ids)))}  # type: ignore[union-attr]
        if site_ids
        else {}
    )
    see_phone = has_permission(user.role, Permission.SEE_PHONE_NUMBERS)
    out = []
    for p in participants:
        d = p.model_dump()
        d["study"] = studies.get(p.study_id)
        d["site_code"] = sites.get(p.site_id)
        d["status"] = p.status.value
        d["locale"] = p.locale.value
        d["phone"] = p.phone_e164 if see_phone else mask_phone(p.phone_e164)
        out.append(d)
    return out
