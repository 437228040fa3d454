"""Site scoping: the one layer every participant query goes through.

A staff user sees the participants of the sites they belong to. Anything else answers 404
(never 403) so that the existence of another site's participant does not leak.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select
from sqlmodel.sql.expression import SelectOfScalar

from server.auth.models import SiteMembership, StaffUser
from server.errors import NotFound
from server.participants.models import Participant, Site


def visible_site_ids_subquery(user: StaffUser) -> Any:
    """A SQL subquery of the site ids a user may see."""
    return select(SiteMembership.site_id).where(SiteMembership.user_id == user.id)


def participants_query(user: StaffUser) -> SelectOfScalar[Participant]:
    """SELECT participant restricted to the user's sites."""
    return select(Participant).where(
        Participant.site_id.in_(visible_site_ids_subquery(user))  # type: ignore[attr-defined]
    )


def sites_query(user: StaffUser) -> SelectOfScalar[Site]:
    """SELECT site restricted to the user's sites."""
    return select(Site).where(Site.id.in_(visible_site_ids_subquery(user)))  # type: ignore[union-attr]


def get_participant(*, session: Session, user: StaffUser, participant_id: int) -> Participant:
    """One participant of the user's sites, or NotFound."""
    found = session.exec(participants_query(user).where(Participant.id == participant_id)).first()
    if found is None:
        raise NotFound("participant not found")
    return found


def get_site(*, session: Session, user: StaffUser, site_id: int) -> Site:
    """One of the user's sites, or NotFound."""
    found = session.exec(sites_query(user).where(Site.id == site_id)).first()
    if found is None:
        raise NotFound("site not found")
    return found


def can_see_site(*, session: Session, user: StaffUser, site_id: int) -> bool:
    """Whether the user belongs to the site."""
    return (
        session.exec(
            select(SiteMembership.id).where(
                SiteMembership.user_id == user.id, SiteMembership.site_id == site_id
            )
        ).first()
        is not None
    )
