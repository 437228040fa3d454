"""Imports every table module so SQLModel.metadata is complete (Alembic, tests)."""

from notifications.models import MessageLog, OutboxMessage
from server.audit import AuditEvent
from server.auth.models import ApiToken, Role, SiteMembership, StaffUser
from server.participants.models import Locale, Participant, ParticipantStatus, Site
from server.protocols.models import ProtocolVersion, Study
from server.schedules.models import Decision, EventStatus, EventType, ScheduleEvent

__all__ = [
    "ApiToken",
    "AuditEvent",
    "Decision",
    "EventStatus",
    "EventType",
    "Locale",
    "MessageLog",
    "OutboxMessage",
    "Participant",
    "ParticipantStatus",
    "ProtocolVersion",
    "Role",
    "ScheduleEvent",
    "Site",
    "SiteMembership",
    "StaffUser",
    "Study",
]
