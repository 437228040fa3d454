"""Imports every table module so SQLModel.metadata is complete (Alembic, tests)."""

from notifications.models import MessageLog, OutboxMessage, SmsSenderRate
from server.alerts.models import Alert, AlertLog, VoiceCall
from server.audit import AuditEvent
from server.auth.models import ApiToken, Role, SiteMembership, StaffUser
from server.fhir.models import FhirNotification, FhirSubscription
from server.health.models import LeaderLease, ProcessHeartbeat
from server.oncall.models import CalendarLink, Rota, RotaOverride
from server.participants.mobile import ActivationCode, ParticipantToken
from server.participants.models import (
    EligibilityFact,
    Locale,
    Participant,
    ParticipantStatus,
    Site,
)
from server.protocols.models import ProtocolVersion, Study
from server.results.models import LabResult, PfsEvent
from server.schedules.models import Decision, EventStatus, EventType, ScheduleEvent
from server.surveys.models import SurveyAnswer, SurveyResponse, SurveyScore

__all__ = [
    "ActivationCode",
    "Alert",
    "AlertLog",
    "ApiToken",
    "AuditEvent",
    "CalendarLink",
    "Decision",
    "EligibilityFact",
    "EventStatus",
    "EventType",
    "FhirNotification",
    "FhirSubscription",
    "LabResult",
    "LeaderLease",
    "Locale",
    "MessageLog",
    "OutboxMessage",
    "Participant",
    "ParticipantStatus",
    "ParticipantToken",
    "PfsEvent",
    "ProcessHeartbeat",
    "ProtocolVersion",
    "Role",
    "Rota",
    "RotaOverride",
    "ScheduleEvent",
    "Site",
    "SiteMembership",
    "SmsSenderRate",
    "StaffUser",
    "Study",
    "SurveyAnswer",
    "SurveyResponse",
    "SurveyScore",
    "VoiceCall",
]
