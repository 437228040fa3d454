"""Imports every table module so SQLModel.metadata is complete (Alembic, tests)."""

from server.audit import AuditEvent
from server.auth.models import ApiToken, Role, SiteMembership, StaffUser
from server.participants.models import Locale, Participant, ParticipantStatus, Site
from server.protocols.models import Study

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Locale",
    "Participant",
    "ParticipantStatus",
    "Role",
    "Site",
    "SiteMembership",
    "StaffUser",
    "Study",
]
