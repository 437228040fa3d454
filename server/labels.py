"""The one table of human labels for the values pages show: alert kinds, levels and states, alert
timeline entries, message kinds, statuses and categories, event types and statuses, participant
statuses, results, roles, audit actions and actors, escalation routes and recipient groups.

Pages use the `label` template filter (api/page_kit.py) rather than munging keys ("ctdna_positive"
→ "ctdna positive"). An enum value finds its table by its class; a plain string names its table
(`m.kind|label("message_kind")`). tests/test_labels.py checks that every member of every enum
listed here has a label, so a new status cannot reach a page as a raw key.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from typing import Any

from notifications.messages import MessageKind
from notifications.models import MessageCategory, MessageStatus
from server.alerts.models import AlertKind, AlertState, Level
from server.auth.models import Role
from server.participants.models import Locale, ParticipantStatus
from server.protocols.definition import EventType, Modality
from server.results.models import CtdnaCall, Recist, ResultKind, ResultStatus
from server.schedules.models import DecisionStatus, EventStatus

ALERT_KIND = {
    AlertKind.CTDNA_POSITIVE: "ctDNA turned positive",
    AlertKind.CTDNA_POSITIVE_BASELINE: "ctDNA positive at baseline",
    AlertKind.PROGRESSION: "Radiological progression",
    AlertKind.REDRAW_NEEDED: "ctDNA redraw needed",
    AlertKind.RESULT_OVERDUE: "Result overdue",
    AlertKind.MISSED_WINDOW: "ctDNA draw window missed",
    AlertKind.ENTRY_GATE: "Entry gate: task",
    AlertKind.CRITICAL_ANSWER: "Questionnaire answer to review",
    AlertKind.DEAD_ROUTE: "Escalation route reaches nobody",
    AlertKind.OPERATOR: "Escalation stalled",
}

LEVEL = {
    Level.CRITICAL: "Critical",
    Level.URGENT: "Urgent",
    Level.ROUTINE: "Routine",
}

# What each level means for the person reading it (alert pages, Today).
LEVEL_MEANING = {
    Level.CRITICAL: "act now: paged day and night until someone acknowledges",
    Level.URGENT: "act today: SMS in the day, reply ACK; escalates if nobody does",
    Level.ROUTINE: "a task: in the morning SMS, no reply needed, never escalates",
}

ALERT_STATE = {
    AlertState.OPEN: "Open",
    AlertState.ACKNOWLEDGED: "Acknowledged",
    AlertState.RESOLVED: "Resolved",
}

# AlertLog.what (server/alerts/service.py).
ALERT_LOG = {
    "opened": "Opened",
    "tier_notified": "SMS queued",
    "tier_unreachable": "Nobody reachable in this tier",
    "route_exhausted": "No further tier",
    "delivery_failed": "SMS not delivered",
    "acknowledged": "Acknowledged",
    "ack_repeated": "Acknowledged again (no change)",
    "resolved": "Resolved",
    "stale_escalation_ignored": "Escalation skipped (already handled)",
    "sms_ack_refused": "SMS acknowledgement refused",
    "failsafe_fired": "Fail-safe called (every tier unanswered)",
    "call_placed": "Phone call placed",
    "call_answered": "Call answered, no key pressed",
    "call_no_answer": "Call not answered",
    "call_busy": "Call: line busy",
    "call_voicemail": "Call reached voicemail",
    "call_failed": "Call failed",
}

ACK_CHANNEL = {
    "web": "on the web",
    "api": "through the API",
    "sms": "by SMS reply",
    "app": "in the app",
    "resolve": "when resolving",
    "call": "by keypad on a phone call",
}

MESSAGE_KIND = {
    MessageKind.REMINDER_BLOOD_DRAW: "Blood test reminder",
    MessageKind.REMINDER_SCAN: "Scan reminder",
    MessageKind.REMINDER_VISIT: "Visit reminder",
    MessageKind.REMINDER_QUESTIONNAIRE: "Questionnaire reminder",
    MessageKind.REMINDER_OVERDUE: "Overdue appointment notice",
    MessageKind.WELCOME: "Welcome",
    MessageKind.ACTIVATION_CODE: "App activation code",
    MessageKind.OPT_OUT_CONFIRMATION: "Opt-out confirmation",
    MessageKind.OPT_IN_CONFIRMATION: "Opt-in confirmation",
    MessageKind.HELP: "Help answer",
    MessageKind.UNKNOWN_SENDER: "Unknown sender answer",
    MessageKind.ALERT_NEW: "Critical alert",
    MessageKind.ALERT_BUNDLE: "Alerts and tasks (one SMS)",
    MessageKind.ALERT_ESCALATED: "Critical alert, escalated",
    MessageKind.ALERT_URGENT: "Urgent alert",
    MessageKind.ALERT_URGENT_ESCALATED: "Urgent alert, escalated",
    MessageKind.ALERT_TASK: "Task",
    MessageKind.ALERT_FAILSAFE: "Fail-safe alert",
    MessageKind.ALERT_FAILSAFE_NUMBER: "Fail-safe alert (site number)",
    MessageKind.ALERT_ACK_CONFIRMED: "Acknowledgement confirmed",
    MessageKind.ACK_CODE_UNKNOWN: "Unknown ACK code answer",
    MessageKind.PARTICIPANT_UNREACHABLE: "Participant unreachable notice",
    MessageKind.DEAD_ROUTE_WARNING: "Dead escalation route warning",
    MessageKind.RESULT_OVERDUE: "Task: result overdue",
    MessageKind.MISSED_WINDOW: "Task: window missed",
    MessageKind.DECISION_DUE: "Decision due notice",
    MessageKind.REDRAW_NEEDED: "Task: redraw needed",
}

MESSAGE_STATUS = {
    MessageStatus.PENDING: "Waiting to send",
    MessageStatus.SENDING: "Sending",
    MessageStatus.SENT: "Sent",
    MessageStatus.DELIVERED: "Delivered",
    MessageStatus.UNDELIVERED: "Not delivered",
    MessageStatus.FAILED: "Failed",
    MessageStatus.EXPIRED: "Expired (too late to send)",
    MessageStatus.CANCELLED: "Cancelled",
    MessageStatus.OPTED_OUT: "Not sent (opted out)",
}

MESSAGE_CATEGORY = {
    MessageCategory.REMINDER: "Reminder",
    MessageCategory.WELCOME: "Welcome",
    MessageCategory.ACTIVATION: "Activation",
    MessageCategory.STAFF_ALERT: "Staff alert",
    MessageCategory.STAFF_NOTICE: "Staff notice",
    MessageCategory.DIGEST: "Digest",
    MessageCategory.REPLY: "Reply",
}

EVENT_TYPE = {
    EventType.CTDNA_DRAW: "ctDNA draw",
    EventType.BLOOD_WORK: "Blood work",
    EventType.TUMOR_MARKERS: "Tumour markers",
    EventType.IMAGING: "Imaging",
    EventType.CLINIC_VISIT: "Clinic visit",
    EventType.QUESTIONNAIRE: "Questionnaire",
    EventType.DECISION_POINT: "Decision point",
    EventType.TREATMENT_CYCLE: "Treatment cycle",
}

EVENT_STATUS = {
    EventStatus.PLANNED: "Planned",
    EventStatus.OPEN: "Open",
    EventStatus.COMPLETED: "Done",
    EventStatus.MISSED: "Missed",
    EventStatus.CANCELLED: "Cancelled",
    EventStatus.NOT_APPLICABLE: "Not applicable",
}

DECISION_STATUS = {
    DecisionStatus.DUE: "Due",
    DecisionStatus.DECIDED: "Decided",
    DecisionStatus.CANCELLED: "Cancelled",
}

PARTICIPANT_STATUS = {
    ParticipantStatus.SCREENING: "Screening",
    ParticipantStatus.ACTIVE: "Active",
    ParticipantStatus.OFF_TREATMENT_MONITORING: "Off treatment, monitored",
    ParticipantStatus.RESUMED_TREATMENT: "Treatment resumed",
    ParticipantStatus.CONTINUES_MAINTENANCE: "Continues maintenance (not followed)",
    ParticipantStatus.COMPLETED: "Completed",
    ParticipantStatus.WITHDRAWN: "Withdrawn",
}

LOCALE = {Locale.EN: "English", Locale.FR: "French", Locale.ZH: "Chinese"}

RESULT_KIND = {
    ResultKind.CTDNA: "ctDNA",
    ResultKind.IMAGING: "Imaging",
    ResultKind.TUMOR_MARKER: "Tumour marker",
}

CTDNA_CALL = {
    CtdnaCall.POSITIVE: "Positive",
    CtdnaCall.NEGATIVE: "Negative",
    CtdnaCall.INDETERMINATE: "Indeterminate",
    CtdnaCall.INSUFFICIENT_SAMPLE: "Insufficient sample",
}

RECIST = {
    Recist.CR: "CR (complete response)",
    Recist.PR: "PR (partial response)",
    Recist.SD: "SD (stable disease)",
    Recist.PD: "PD (progression)",
    Recist.NE: "NE (not evaluable)",
}

RESULT_STATUS = {
    ResultStatus.ACCEPTED: "Accepted",
    ResultStatus.QUARANTINED: "Quarantined",
    ResultStatus.REJECTED: "Rejected",
}

MODALITY = {
    Modality.CT: "CT",
    Modality.PET_CT: "PET-CT",
    Modality.MRI: "MRI",
    Modality.BONE_SCAN: "Bone scan",
    Modality.CT_OR_MRI: "CT or MRI",
    Modality.ULTRASOUND: "Ultrasound",
    Modality.MAMMOGRAPHY: "Mammography",
}

ROLE = {
    Role.ADMIN: "Admin",
    Role.INVESTIGATOR: "Investigator",
    Role.COORDINATOR: "Coordinator",
    Role.NURSE: "Nurse",
    Role.MONITOR: "Monitor",
}

# Escalation routes (server/alerts/rules.py DEFAULT_POLICY) and the groups a tier names.
ROUTE = {
    "clinical": "Critical alerts",
    "urgent": "Urgent alerts",
    "follow_up": "Routine tasks",
    "operator": "System alerts",
    "failsafe": "Fail-safe",
    "rota": "On-call rota",
}

RECIPIENTS = {
    "on_call_nurses": "the on-call nurse",
    "nurses_and_coordinators": "every nurse and coordinator",
    "coordinators": "the coordinators",
    "investigators": "the investigator",
    "admins": "the admins",
    "rota:primary": "the rota's primary",
    "rota:backup": "the rota's backup",
}

# Audit actions (server/audit.py rows); event.<what> from the schedules service.
AUDIT_ACTION = {
    "adherence.export": "Adherence exported",
    "ack_report.export": "Acknowledgement times exported",
    "alert.failsafe_fired": "Fail-safe called",
    "alert.call_keypress": "Alert acknowledged by keypad (phone call)",
    "rota.set": "On-call rota set",
    "rota.override": "On-call override added",
    "oncall.calendar_link_created": "Calendar link created",
    "oncall.calendar_link_reset": "Calendar link reset",
    "oncall.calendar_link_revoked": "Calendar link stopped",
    "worklist.export": "Coming-up list exported",
    "alert.acknowledge": "Alert acknowledged",
    "alert.open": "Alert opened",
    "alert.resolve": "Alert resolved",
    "alert.sms_ack_refused": "SMS acknowledgement refused",
    "auth.login": "Signed in",
    "auth.login_failed": "Sign-in failed",
    "auth.logout": "Signed out",
    "auth.password_changed": "Password changed",
    "auth.token_issued": "API token issued",
    "auth.token_revoked": "API token revoked",
    "decision.due": "Decision due",
    "eligibility.record": "Eligibility fact recorded",
    "entry_gate.failed": "Entry gate: continues maintenance",
    "entry_gate.override": "Entry gate overridden",
    "entry_gate.passed": "Entry gate passed: monitoring",
    "decision.record": "Decision recorded",
    "event.cancel": "Event cancelled",
    "event.complete": "Event recorded done",
    "event.missed": "Event missed",
    "event.redraw": "Redraw planned",
    "event.reschedule": "Event rescheduled",
    "fhir_subscription.create": "FHIR subscription registered",
    "fhir_subscription.end": "FHIR subscription ended",
    "instrument_text.load": "Questionnaire text loaded",
    "message.cancel": "Message cancelled",
    "message.resend": "Message sent again",
    "participant.activation_code": "App activation code sent",
    "participant.app_activated": "App activated",
    "participant.choice": "Protocol choice set",
    "participant.create": "Participant enrolled",
    "participant.preferences": "Preferences changed",
    "participant.protocol_version": "Protocol version changed",
    "participant.sms_consent": "SMS consent changed",
    "participant.update": "Participant changed",
    "participant.withdraw": "Participant withdrawn",
    "result.pam_retraction": "PAM finding retracted",
    "result.quarantine": "Result quarantined",
    "schedule.ended": "Schedule ended",
    "schedule.planned": "Schedule planned",
    "schedule_event.instrument": "Questionnaire instrument changed",
    "site.create": "Site created",
    "site.alert_levels": "Alert levels changed",
    "site.on_call": "On-call staff changed",
    "site.update": "Site changed",
    "study.create": "Study created",
    "survey.submit": "Questionnaire submitted",
    "user.create": "Staff account created",
    "user.update": "Staff account changed",
}

# Actors that are not a staff member (audit rows, alert timelines).
SYSTEM_ACTOR = {
    "system": "Stepdown",
    "system:rules": "Stepdown (protocol rules)",
    "system:scheduler": "Stepdown (scheduler)",
    "system:watchdog": "Stepdown (escalation watchdog)",
    "system:routes": "Stepdown (route check)",
    "system:surveys": "Stepdown (questionnaires)",
    "system:sms-provider": "SMS provider",
    "participant:sms": "The participant (SMS)",
    "cli": "Command line",
}

TABLES: Mapping[str, Mapping[Any, str]] = {
    "alert_kind": ALERT_KIND,
    "level": LEVEL,
    "alert_state": ALERT_STATE,
    "alert_log": ALERT_LOG,
    "ack_channel": ACK_CHANNEL,
    "message_kind": MESSAGE_KIND,
    "message_status": MESSAGE_STATUS,
    "message_category": MESSAGE_CATEGORY,
    "event_type": EVENT_TYPE,
    "event_status": EVENT_STATUS,
    "decision_status": DECISION_STATUS,
    "participant_status": PARTICIPANT_STATUS,
    "locale": LOCALE,
    "result_kind": RESULT_KIND,
    "ctdna_call": CTDNA_CALL,
    "recist": RECIST,
    "result_status": RESULT_STATUS,
    "modality": MODALITY,
    "role": ROLE,
    "route": ROUTE,
    "recipients": RECIPIENTS,
    "audit_action": AUDIT_ACTION,
}

# The table of each enum (an enum value finds its labels by its class).
ENUM_TABLES: Mapping[type[enum.Enum], str] = {
    AlertKind: "alert_kind",
    Level: "level",
    AlertState: "alert_state",
    MessageKind: "message_kind",
    MessageStatus: "message_status",
    MessageCategory: "message_category",
    EventType: "event_type",
    EventStatus: "event_status",
    DecisionStatus: "decision_status",
    ParticipantStatus: "participant_status",
    Locale: "locale",
    ResultKind: "result_kind",
    CtdnaCall: "ctdna_call",
    Recist: "recist",
    ResultStatus: "result_status",
    Modality: "modality",
    Role: "role",
}

# Plain strings without a table name are looked up in these, in this order.
_UNNAMED_ORDER = (
    "alert_kind",
    "level",
    "message_kind",
    "event_type",
    "participant_status",
    "event_status",
    "message_status",
    "alert_state",
    "modality",
    "role",
    "route",
    "recipients",
    "audit_action",
)


def _plain(value: str) -> str:
    # A value no table knows (a choice value, a phase or fact name from a protocol file).
    return value.replace("_", " ").strip()


def label(value: Any, table: str | None = None) -> str:
    """The human label of a value (an enum member, or a string with its table's name)."""
    if value is None or value == "":
        return ""
    if isinstance(value, enum.Enum):
        table = table or ENUM_TABLES.get(type(value))
        value = value.value
    text = str(value)
    names = (table,) if table else _UNNAMED_ORDER
    for name in names:
        found = TABLES[name].get(text)
        if found is not None:
            return found
    return _plain(text)


_STAFF = re.compile(r"^staff:(\d+)$")


def actor(value: str | None, names: Mapping[int, str], user_id: int | None = None) -> str:
    """Who did something, in words: a staff member by name ("staff:3" → "Claire Martin"), a
    participant, a system job, the command line."""
    if user_id is not None and user_id in names:
        return names[user_id]
    if not value:
        return "Stepdown"
    match = _STAFF.match(value)
    if match:
        return names.get(int(match.group(1)), "a former staff member")
    if value in SYSTEM_ACTOR:
        return SYSTEM_ACTOR[value]
    if value.startswith("participant:"):
        return "The participant"
    if value.startswith("cli:import:"):
        return f"Lab import ({value.removeprefix('cli:import:')})"
    if value.startswith("system:"):
        return f"Stepdown ({value.removeprefix('system:').replace('-', ' ')})"
    return value


def staff_ids(values: list[str | None]) -> set[int]:
    """The staff ids named by actor strings ("staff:3")."""
    out = set()
    for value in values:
        match = _STAFF.match(value or "")
        if match:
            out.add(int(match.group(1)))
    return out


def event_key(key: str, item_labels: Mapping[str, str]) -> str:
    """An event key ("ctdna_baseline:1", "ctdna:3:redraw1") in words, from the protocol's item
    labels ("Baseline Signatera ctDNA draw #1", "Signatera ctDNA draw #3, redraw 1")."""
    parts = key.split(":")
    item = item_labels.get(parts[0])
    if item is None:
        return key
    text = item if len(parts) < 2 else f"{item} #{parts[1]}"
    for extra in parts[2:]:
        found = re.match(r"^redraw(\d+)$", extra)
        text += f", redraw {found.group(1)}" if found else f", {extra}"
    return text
