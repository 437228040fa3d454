"""Marshmallow schemas of the JSON API (request and response)."""

from __future__ import annotations

from datetime import date
from typing import Any

import marshmallow as ma
from marshmallow import validate

from server.auth.models import Role
from server.db import ID_MAX
from server.participants.models import Locale, ParticipantStatus

STATUS_VALUES = [s.value for s in ParticipantStatus]
LOCALE_VALUES = [loc.value for loc in Locale]
ROLE_VALUES = [r.value for r in Role]


class Id(ma.fields.Integer):
    """A row id: 1 … ID_MAX (server.db), anything else is 422 before a query is built."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("validate", validate.Range(min=1, max=ID_MAX))
        super().__init__(**kwargs)


class StrictBoolean(ma.fields.Boolean):
    """JSON true or false only: 0, 1, "yes" or "on" are 422, as the documented type says."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


# The dates a trial can mean. Far ones (0001-01-01, 9999-12-31) overflow the date arithmetic of
# windows and time zones, so they are 422 at the edge, checked on the date as written (before any
# conversion to UTC, which overflows too).
EARLIEST = date(1900, 1, 1)
LATEST = date(2199, 12, 31)
_DATE_RANGE = f"too far in the past or future: from {EARLIEST} to {LATEST}"


class TrialDate(ma.fields.Date):
    """A calendar date from EARLIEST to LATEST."""

    default_error_messages = {"range": _DATE_RANGE}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        day = super()._deserialize(value, attr, data, **kwargs)
        if not EARLIEST <= day <= LATEST:
            raise self.make_error("range")
        return day


class TrialDateTime(ma.fields.AwareDateTime):
    """An instant with its offset, on a date from EARLIEST to LATEST."""

    default_error_messages = {"range": _DATE_RANGE}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        moment = super()._deserialize(value, attr, data, **kwargs)
        if not EARLIEST <= moment.date() <= LATEST:
            raise self.make_error("range")
        return moment


class PatchSchema(ma.Schema):
    """A PATCH body: at least one field to change (an empty body is 422, not a silent 200)."""

    NOT_CHANGES: tuple[str, ...] = ()

    @ma.validates_schema
    def _something_to_change(self, data: dict[str, Any], **_: Any) -> None:
        if not (data.keys() - set(self.NOT_CHANGES)):
            raise ma.ValidationError("nothing to change", field_name="_schema")


StudyCode = ma.fields.String(
    validate=[
        validate.Length(min=1, max=32),
        validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", error="letters, digits, . _ - only"),
    ]
)


class TokenRequestSchema(ma.Schema):
    email = ma.fields.Email(required=True)
    password = ma.fields.String(required=True, validate=validate.Length(min=1, max=500))
    label = ma.fields.String(validate=validate.Length(max=100), load_default=None)


class TokenSchema(ma.Schema):
    token = ma.fields.String(metadata={"description": "shown once; send as Authorization: Bearer"})
    token_type = ma.fields.String()
    expires_at = ma.fields.AwareDateTime()
    user = ma.fields.Dict()


class ParticipantCreateSchema(ma.Schema):
    study = ma.fields.String(
        required=True,
        validate=validate.Length(min=1, max=32),
        metadata={"description": "study key, e.g. HEROES"},
    )
    site_id = Id(required=True, strict=True)
    study_code = ma.fields.String(
        required=True,
        validate=StudyCode.validate,  # type: ignore[arg-type]
        metadata={"description": "pseudonymous code; never a name"},
    )
    cohort = ma.fields.String(validate=validate.Length(min=1, max=32), load_default=None)
    anchor_date = TrialDate(load_default=None)
    status = ma.fields.String(validate=validate.OneOf(STATUS_VALUES), load_default="screening")
    timezone = ma.fields.String(
        validate=validate.Length(min=1, max=64),
        load_default=None,
        metadata={"description": "IANA time zone; default: the site's"},
    )
    locale = ma.fields.String(validate=validate.OneOf(LOCALE_VALUES), load_default="en")
    phone = ma.fields.String(
        validate=validate.Length(min=3, max=32),
        load_default=None,
        metadata={"description": "E.164, or national format of the site"},
    )
    has_sms_consent = StrictBoolean(load_default=False)
    eligibility = ma.fields.Dict(
        keys=ma.fields.String(validate=validate.Length(min=1, max=48)),
        values=ma.fields.Nested(lambda: AttestedFactSchema()),
        load_default=None,
        metadata={
            "description": "entry-gate facts a person attests (and stop_date, the confirmed "
            "stop date): {fact: {value, observed_on}}; past screening, every fact of the gate"
        },
    )


class AttestedFactSchema(ma.Schema):
    value = ma.fields.String(validate=validate.Length(max=64), load_default="")
    observed_on = TrialDate(
        required=True, metadata={"description": "the date the fact held (YYYY-MM-DD)"}
    )


class AttestSchema(ma.Schema):
    fact = ma.fields.String(
        required=True,
        validate=validate.Length(min=1, max=48),
        metadata={"description": "a fact the gate says a person attests, or stop_date"},
    )
    value = ma.fields.String(validate=validate.Length(max=64), load_default="")
    observed_on = TrialDate(
        required=True,
        metadata={"description": "the date it held; for stop_date, the confirmed stop date"},
    )
    note = ma.fields.String(validate=validate.Length(max=500), load_default=None)


class GateOverrideSchema(ma.Schema):
    outcome = ma.fields.String(required=True, validate=validate.OneOf(["pass", "fail"]))
    reason = ma.fields.String(required=True, validate=validate.Length(min=1, max=1000))
    stop_date = TrialDate(
        load_default=None, metadata={"description": "pass: the day monitoring counts from"}
    )


class EntryGateSchema(ma.Schema):
    label = ma.fields.String()
    source = ma.fields.String(allow_none=True)
    status = ma.fields.String()
    outcome = ma.fields.String(metadata={"description": "pass | fail | wait"})
    decided = ma.fields.Boolean()
    awaiting = ma.fields.List(ma.fields.String())
    facts = ma.fields.List(ma.fields.Dict())
    stop_date = ma.fields.Dict()
    paths = ma.fields.List(ma.fields.Dict())


class ParticipantUpdateSchema(PatchSchema):
    NOT_CHANGES = ("reason",)

    study_code = ma.fields.String(validate=StudyCode.validate)  # type: ignore[arg-type]
    site_id = Id(strict=True)
    cohort = ma.fields.String(validate=validate.Length(min=1, max=32), allow_none=True)
    anchor_date = TrialDate(allow_none=True)
    status = ma.fields.String(validate=validate.OneOf(STATUS_VALUES))
    timezone = ma.fields.String(validate=validate.Length(min=1, max=64))
    locale = ma.fields.String(validate=validate.OneOf(LOCALE_VALUES))
    phone = ma.fields.String(validate=validate.Length(min=3, max=32), allow_none=True)
    has_sms_consent = StrictBoolean()
    quiet_hours_start = ma.fields.Time(metadata={"description": "local HH:MM; no SMS from then"})
    quiet_hours_end = ma.fields.Time(metadata={"description": "local HH:MM; SMS again from then"})
    reason = ma.fields.String(
        validate=validate.Length(max=1000),
        load_default=None,
        metadata={"description": "required when trial data changes"},
    )


class WithdrawSchema(ma.Schema):
    reason = ma.fields.String(required=True, validate=validate.Length(min=1, max=1000))


class ParticipantSchema(ma.Schema):
    id = ma.fields.Integer()
    study = ma.fields.String()
    site_id = ma.fields.Integer()
    site_code = ma.fields.String()
    study_code = ma.fields.String()
    cohort = ma.fields.String(allow_none=True)
    anchor_date = ma.fields.Date(allow_none=True)
    status = ma.fields.String()
    timezone = ma.fields.String()
    locale = ma.fields.String()
    phone = ma.fields.String(allow_none=True, metadata={"description": "masked for monitors"})
    has_sms_consent = ma.fields.Boolean()
    quiet_hours_start = ma.fields.Time()
    quiet_hours_end = ma.fields.Time()
    protocol_version = ma.fields.String(allow_none=True)
    withdrawn_at = ma.fields.AwareDateTime(allow_none=True)
    created_at = ma.fields.AwareDateTime()
    updated_at = ma.fields.AwareDateTime()


class ParticipantListArgs(ma.Schema):
    study = ma.fields.String(validate=validate.Length(min=1, max=32))
    site_id = Id()
    status = ma.fields.String(validate=validate.OneOf(STATUS_VALUES))
    cohort = ma.fields.String(validate=validate.Length(min=1, max=32))
    search = ma.fields.String(
        validate=validate.Length(min=1, max=32), metadata={"description": "part of a study code"}
    )
    adherence_below = ma.fields.Integer(
        validate=validate.Range(min=0, max=100),
        metadata={
            "description": "only participants whose in-window adherence is under this % "
            "(participants with nothing due yet are never under)"
        },
    )
    page = ma.fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = ma.fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class ParticipantPageSchema(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(ParticipantSchema))
    page = ma.fields.Integer()
    page_size = ma.fields.Integer()
    total = ma.fields.Integer()
    pages = ma.fields.Integer()


class AuditEventSchema(ma.Schema):
    id = ma.fields.Integer()
    at = ma.fields.AwareDateTime()
    actor = ma.fields.String()
    action = ma.fields.String()
    entity = ma.fields.String()
    entity_id = ma.fields.String()
    before = ma.fields.Dict(allow_none=True)
    after = ma.fields.Dict(allow_none=True)
    reason = ma.fields.String(allow_none=True)
    request_id = ma.fields.String(allow_none=True)


# Roles a site's fail-safe may name (a monitor acknowledges nothing).
FAILSAFE_ROLES = ["investigator", "coordinator", "nurse", "admin"]
E164 = r"^\+[1-9][0-9]{6,14}$"


class SiteSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    code = ma.fields.String(
        required=True,
        validate=[validate.Length(min=1, max=32), validate.Regexp(r"^[A-Za-z0-9_-]+$")],
    )
    name = ma.fields.String(required=True, validate=validate.Length(min=1, max=200))
    country = ma.fields.String(
        required=True, validate=validate.Regexp(r"^[A-Za-z]{2}$", error="ISO 3166 two-letter code")
    )
    timezone = ma.fields.String(required=True, validate=validate.Length(min=1, max=64))
    is_active = ma.fields.Boolean(dump_only=True)
    failsafe_role = ma.fields.String(
        allow_none=True,
        validate=validate.OneOf(FAILSAFE_ROLES),
        metadata={
            "description": "the fail-safe: this role's staff at the site (with a verified phone) "
            "get the alert nobody acknowledged; a site enrols once it has a role or a number"
        },
    )
    failsafe_phone_e164 = ma.fields.String(
        allow_none=True,
        validate=validate.Regexp(E164, error="an E.164 number, e.g. +33142345678"),
        metadata={"description": "the fail-safe's number (a switchboard, a duty phone)"},
    )


class SiteUpdateSchema(PatchSchema):
    name = ma.fields.String(validate=validate.Length(min=1, max=200))
    country = ma.fields.String(validate=validate.Regexp(r"^[A-Za-z]{2}$"))
    timezone = ma.fields.String(validate=validate.Length(min=1, max=64))
    is_active = StrictBoolean()
    failsafe_role = ma.fields.String(allow_none=True, validate=validate.OneOf(FAILSAFE_ROLES))
    failsafe_phone_e164 = ma.fields.String(
        allow_none=True, validate=validate.Regexp(E164, error="an E.164 number, e.g. +33142345678")
    )


class UserCreateSchema(ma.Schema):
    email = ma.fields.Email(required=True)
    full_name = ma.fields.String(required=True, validate=validate.Length(min=1, max=200))
    password = ma.fields.String(
        required=True, load_only=True, validate=validate.Length(min=12, max=500)
    )
    role = ma.fields.String(required=True, validate=validate.OneOf(ROLE_VALUES))
    phone = ma.fields.String(validate=validate.Length(min=3, max=32), load_default=None)
    site_ids = ma.fields.List(Id(strict=True), required=True)


class UserUpdateSchema(PatchSchema):
    full_name = ma.fields.String(validate=validate.Length(min=1, max=200))
    role = ma.fields.String(validate=validate.OneOf(ROLE_VALUES))
    phone = ma.fields.String(validate=validate.Length(min=3, max=32), allow_none=True)
    is_phone_verified = StrictBoolean()
    is_active = StrictBoolean()
    site_ids = ma.fields.List(Id(strict=True))


class UserSchema(ma.Schema):
    id = ma.fields.Integer()
    email = ma.fields.String()
    full_name = ma.fields.String()
    role = ma.fields.String()
    phone = ma.fields.String(allow_none=True)
    is_phone_verified = ma.fields.Boolean()
    is_active = ma.fields.Boolean()
    site_ids = ma.fields.List(ma.fields.Integer())


class StudySchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    key = ma.fields.String(required=True, validate=validate.Length(min=1, max=32))
    title = ma.fields.String(required=True, validate=validate.Length(min=1, max=300))
    protocol_key = ma.fields.String(required=True, validate=validate.Length(min=1, max=64))


EVENT_STATUS_VALUES = ["planned", "open", "completed", "missed", "cancelled", "not_applicable"]
EVENT_TYPE_VALUES = [
    "ctdna_draw",
    "blood_work",
    "tumor_markers",
    "imaging",
    "clinic_visit",
    "questionnaire",
    "decision_point",
    "treatment_cycle",
]


class ScheduleArgs(ma.Schema):
    status = ma.fields.String(validate=validate.OneOf(EVENT_STATUS_VALUES))
    type = ma.fields.String(validate=validate.OneOf(EVENT_TYPE_VALUES))
    date_from = TrialDate(data_key="from", metadata={"description": "local target date ≥"})
    date_to = TrialDate(data_key="to", metadata={"description": "local target date ≤"})


class EventSchema(ma.Schema):
    id = ma.fields.Integer()
    key = ma.fields.String()
    item_id = ma.fields.String()
    sequence = ma.fields.Integer()
    event_type = ma.fields.String()
    label = ma.fields.String()
    phase = ma.fields.String(allow_none=True)
    modality = ma.fields.String(allow_none=True)
    instrument = ma.fields.String(allow_none=True)
    regimen = ma.fields.String(allow_none=True)
    protocol_version = ma.fields.String()
    status = ma.fields.String()
    target_date = ma.fields.Date()
    window_open_date = ma.fields.Date()
    window_close_date = ma.fields.Date()
    target_at = ma.fields.AwareDateTime()
    window_open_at = ma.fields.AwareDateTime()
    window_close_at = ma.fields.AwareDateTime()
    target_local = ma.fields.String(metadata={"description": "target in the participant's zone"})
    window_open_local = ma.fields.String()
    window_close_local = ma.fields.String()
    time_zone = ma.fields.String()
    expects_result = ma.fields.String(allow_none=True)
    result_turnaround_days = ma.fields.Integer(allow_none=True)
    is_reanchoring = ma.fields.Boolean()
    completed_on = ma.fields.Date(allow_none=True)
    is_out_of_window = ma.fields.Boolean()
    is_touched = ma.fields.Boolean()
    status_reason = ma.fields.String(allow_none=True)
    outcome = ma.fields.Dict(allow_none=True)


# An event's reason is stored in schedule_event.status_reason (500 characters).
EVENT_REASON_MAX = 500


class CompleteEventSchema(ma.Schema):
    completed_on = TrialDate(required=True, metadata={"description": "local date it happened"})
    reason = ma.fields.String(
        validate=validate.Length(max=EVENT_REASON_MAX),
        load_default=None,
        metadata={"description": "required when the date is outside the window"},
    )
    outcome = ma.fields.Dict(
        keys=ma.fields.String(),
        load_default=None,
        metadata={
            "description": "ctdna_draw: {ctdna: positive|negative, pam_mutation: bool}; "
            "imaging: {recist: CR|PR|SD|PD|NE}"
        },
    )


class RescheduleEventSchema(ma.Schema):
    target_date = TrialDate(required=True)
    reason = ma.fields.String(required=True, validate=validate.Length(min=1, max=EVENT_REASON_MAX))


class CancelEventSchema(ma.Schema):
    reason = ma.fields.String(required=True, validate=validate.Length(min=1, max=EVENT_REASON_MAX))
    not_applicable = StrictBoolean(load_default=False)


class FactSourceSchema(ma.Schema):
    what = ma.fields.String(metadata={"description": 'what the source said, e.g. "ctDNA positive"'})
    event_key = ma.fields.String(allow_none=True, metadata={"description": "the draw or scan"})
    event_id = ma.fields.Integer(allow_none=True)
    result_id = ma.fields.Integer(allow_none=True)
    accession_id = ma.fields.String(allow_none=True)
    lab = ma.fields.String(allow_none=True)
    on = ma.fields.String(
        allow_none=True,
        metadata={"format": "date", "description": "collected / performed / done (local date)"},
    )


class DecisionFactSchema(ma.Schema):
    name = ma.fields.String()
    kind = ma.fields.String()
    value = ma.fields.String(metadata={"description": "unknown: not done, failed, never tested"})
    note = ma.fields.String()
    sources = ma.fields.List(ma.fields.Nested(FactSourceSchema))


class DecisionSchema(ma.Schema):
    id = ma.fields.Integer()
    event_id = ma.fields.Integer()
    decision_key = ma.fields.String()
    status = ma.fields.String()
    facts = ma.fields.Dict()
    fact_sources = ma.fields.List(
        ma.fields.Nested(DecisionFactSchema),
        allow_none=True,
        metadata={"description": "each fact used, its value and where it came from"},
    )
    team_decides = ma.fields.String(
        allow_none=True,
        metadata={"description": "the protocol's reason when it leaves this to the care team"},
    )
    rule_id = ma.fields.String(allow_none=True)
    recommended_regimen = ma.fields.String(allow_none=True)
    recommended_cycles = ma.fields.Integer(allow_none=True)
    options = ma.fields.List(ma.fields.String())
    explanation = ma.fields.String(allow_none=True)
    chosen_regimen = ma.fields.String(allow_none=True)
    chosen_cycles = ma.fields.Integer(allow_none=True)
    decided_at = ma.fields.AwareDateTime(allow_none=True)
    reason = ma.fields.String(allow_none=True)


class RecordDecisionSchema(ma.Schema):
    regimen = ma.fields.String(required=True, validate=validate.Length(min=1, max=64))
    cycles = ma.fields.Integer(load_default=None, validate=validate.Range(min=1, max=100))
    reason = ma.fields.String(
        validate=validate.Length(max=1000),
        load_default=None,
        metadata={"description": "required when the regimen differs from the recommendation"},
    )


class PreviewSchema(ma.Schema):
    cohort = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=32))
    anchor_date = TrialDate(required=True)
    timezone = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    choices = ma.fields.Dict(
        keys=ma.fields.String(validate=validate.Length(min=1, max=64)),
        values=ma.fields.String(validate=validate.Length(min=1, max=64)),
        load_default=None,
        validate=validate.Length(max=20),
        metadata={
            "description": "values for the protocol's participant choices, e.g. "
            '{"imaging_interval_after_year_1": "6 months"} (absent: the defaults)'
        },
    )


class ChoiceDriveSchema(ma.Schema):
    item = ma.fields.String()
    item_label = ma.fields.String()
    phase = ma.fields.String(allow_none=True)
    field = ma.fields.String(metadata={"description": "every (an interval) | modality"})


class ParticipantChoiceSchema(ma.Schema):
    key = ma.fields.String()
    label = ma.fields.String()
    decided_by = ma.fields.String()
    kind = ma.fields.String()
    allowed = ma.fields.List(ma.fields.String())
    default = ma.fields.String()
    value = ma.fields.String(metadata={"description": "the value in force"})
    is_default = ma.fields.Boolean()
    applies_from = ma.fields.String(metadata={"description": "offset from the anchor date"})
    drives = ma.fields.List(ma.fields.Nested(ChoiceDriveSchema))
    note = ma.fields.String(allow_none=True)
    site_defaults = ma.fields.List(ma.fields.String())
    reason = ma.fields.String(allow_none=True)
    set_at = ma.fields.AwareDateTime(allow_none=True)
    set_by_user_id = ma.fields.Integer(allow_none=True)
    protocol_version = ma.fields.String()


class SetChoiceSchema(ma.Schema):
    value = ma.fields.String(
        required=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": 'one of the allowed values, e.g. "6 months" or "mri"'},
    )
    reason = ma.fields.String(required=True, validate=validate.Length(min=1, max=1000))


class PlanChangeSchema(ma.Schema):
    created = ma.fields.Integer()
    moved = ma.fields.Integer()
    cancelled = ma.fields.Integer()


class SetChoiceResultSchema(ParticipantChoiceSchema):
    replanned = ma.fields.Nested(
        PlanChangeSchema,
        allow_none=True,
        metadata={"description": "future untouched events re-planned (null: nothing changed)"},
    )


class ReportFactSchema(ma.Schema):
    name = ma.fields.String()
    kind = ma.fields.String()
    item = ma.fields.String(allow_none=True)
    values = ma.fields.List(ma.fields.String())
    reading = ma.fields.String(metadata={"description": "what the fact means, where it comes from"})
    note = ma.fields.String(allow_none=True)


class ReportRuleSchema(ma.Schema):
    id = ma.fields.String()
    when = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.List(ma.fields.String()))
    regimen = ma.fields.String(allow_none=True)
    choose_from = ma.fields.List(ma.fields.String(), allow_none=True)
    cycles = ma.fields.Integer(allow_none=True)
    team_decides = ma.fields.String(allow_none=True)
    because = ma.fields.String(allow_none=True)
    outcome = ma.fields.String()
    combinations = ma.fields.Integer(metadata={"description": "combinations it decides"})


class ReportOutcomeSchema(ma.Schema):
    kind = ma.fields.String(metadata={"description": "regimen | same | choose_from | team_decides"})
    regimen = ma.fields.String(allow_none=True)
    options = ma.fields.List(ma.fields.String())
    cycles = ma.fields.Integer(allow_none=True)
    reason = ma.fields.String(allow_none=True)
    text = ma.fields.String()


class ReportRowSchema(ma.Schema):
    facts = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String())
    rule_id = ma.fields.String(allow_none=True)
    also_matching = ma.fields.List(ma.fields.String())
    outcome = ma.fields.Nested(ReportOutcomeSchema)


class ReportTableSchema(ma.Schema):
    id = ma.fields.String()
    label = ma.fields.String()
    order = ma.fields.String(metadata={"description": "exclusive | first_match"})
    facts = ma.fields.List(ma.fields.Nested(ReportFactSchema))
    rules = ma.fields.List(ma.fields.Nested(ReportRuleSchema))
    combinations = ma.fields.Integer()
    team_decides = ma.fields.Integer()
    uncovered = ma.fields.Integer(metadata={"description": "always 0 for a file that loaded"})
    rows = ma.fields.List(ma.fields.Nested(ReportRowSchema))


class DecisionReportSchema(ma.Schema):
    study = ma.fields.String()
    protocol_key = ma.fields.String()
    version = ma.fields.String()
    source_file = ma.fields.String()
    sha256 = ma.fields.String()
    unknown_means = ma.fields.String()
    regimens = ma.fields.List(ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.String()))
    tables = ma.fields.List(ma.fields.Nested(ReportTableSchema))


class AdherenceArgs(ma.Schema):
    study = ma.fields.String(validate=validate.Length(min=1, max=32))


class MessageLogSchema(ma.Schema):
    at = ma.fields.AwareDateTime()
    status = ma.fields.String()
    source = ma.fields.String()
    error_code = ma.fields.Integer(allow_none=True)
    note = ma.fields.String(allow_none=True)


class MessageSchema(ma.Schema):
    id = ma.fields.Integer()
    category = ma.fields.String()
    kind = ma.fields.String()
    status = ma.fields.String()
    to = ma.fields.String(metadata={"description": "masked for monitors"})
    locale = ma.fields.String()
    body = ma.fields.String(
        metadata={
            "description": "the text with every bearer secret (activation code, survey link) "
            'replaced by a marker such as "[code hidden]" or "[link hidden]"'
        }
    )
    segments = ma.fields.Integer()
    intended_at = ma.fields.AwareDateTime()
    not_before_at = ma.fields.AwareDateTime()
    expires_at = ma.fields.AwareDateTime(allow_none=True)
    sent_at = ma.fields.AwareDateTime(allow_none=True)
    delivered_at = ma.fields.AwareDateTime(allow_none=True)
    failed_at = ma.fields.AwareDateTime(allow_none=True)
    error_code = ma.fields.Integer(allow_none=True)
    attempts = ma.fields.Integer()
    status_note = ma.fields.String(allow_none=True)
    log = ma.fields.List(ma.fields.Nested(MessageLogSchema))


class ReasonSchema(ma.Schema):
    reason = ma.fields.String(required=True, validate=validate.Length(min=1, max=1000))


class _ResultBase(ma.Schema):
    lab = ma.fields.String(
        load_default="default",
        validate=validate.Length(min=1, max=64),
        metadata={"description": "the sending lab; accession ids are unique per lab"},
    )
    study = ma.fields.String(load_default=None, validate=validate.Length(min=1, max=32))
    study_code = ma.fields.String(required=True, validate=validate.Length(min=1, max=32))
    accession_id = ma.fields.String(required=True, validate=validate.Length(min=1, max=64))
    reported_at = TrialDateTime(load_default=None)


class CtdnaResultSchema(_ResultBase):
    collected_at = TrialDateTime(required=True)
    assay = ma.fields.String(load_default="Signatera", validate=validate.Length(max=64))
    call = ma.fields.String(
        required=True,
        validate=validate.Length(min=1, max=40),
        metadata={
            "description": "positive | negative | indeterminate | insufficient_sample; any other "
            "value is quarantined for review, never read as negative"
        },
    )
    mtm_per_ml = ma.fields.Float(load_default=None, validate=validate.Range(min=0))
    pam_mutation = StrictBoolean(
        load_default=None, metadata={"description": "PI3K/AKT/mTOR pathway mutation, if tested"}
    )
    retracts_pam_mutation_of = ma.fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=64),
        metadata={
            "description": "the accession id of an earlier ctDNA result from the same lab whose "
            "PAM mutation finding this report withdraws (a corrected report). A mutation once "
            "found otherwise stays found: a later result reporting none does not clear it. "
            "Audited; 422 if that result reported no PAM mutation for this participant."
        },
    )


class ImagingResultSchema(_ResultBase):
    modality = ma.fields.String(required=True, validate=validate.Length(min=1, max=32))
    performed_on = TrialDate(required=True)
    recist = ma.fields.String(
        required=True,
        validate=validate.Length(min=1, max=8),
        metadata={"description": "CR | PR | SD | PD | NE (others are quarantined)"},
    )
    is_confirmed = StrictBoolean(load_default=False)


class TumorMarkerResultSchema(_ResultBase):
    collected_at = TrialDateTime(required=True)
    marker = ma.fields.String(required=True, validate=validate.OneOf(["CA15-3", "CEA"]))
    value = ma.fields.Float(required=True, validate=validate.Range(min=0))
    unit = ma.fields.String(required=True, validate=validate.OneOf(["U/mL", "ng/mL", "µg/L"]))


class ResultSchema(ma.Schema):
    id = ma.fields.Integer()
    kind = ma.fields.String()
    status = ma.fields.String()
    quarantine_reason = ma.fields.String(allow_none=True)
    accession_id = ma.fields.String()
    study_code = ma.fields.String()
    participant_id = ma.fields.Integer(allow_none=True)
    event_id = ma.fields.Integer(allow_none=True)
    alert_id = ma.fields.Integer(allow_none=True)
    collected_at = ma.fields.AwareDateTime(allow_none=True)
    performed_on = ma.fields.Date(allow_none=True)
    call = ma.fields.String(allow_none=True)
    mtm_per_ml = ma.fields.Float(allow_none=True)
    recist = ma.fields.String(allow_none=True)
    is_confirmed = ma.fields.Boolean(allow_none=True)
    marker = ma.fields.String(allow_none=True)
    value = ma.fields.Float(allow_none=True)
    unit = ma.fields.String(allow_none=True)
    received_at = ma.fields.AwareDateTime()


class Hl7ReceiptSchema(ma.Schema):
    ack_code = ma.fields.String(metadata={"description": "AA: the message's results are recorded"})
    control_id = ma.fields.String(metadata={"description": "MSH-10 of the message (MSA-2)"})
    ack = ma.fields.String(metadata={"description": "the HL7 v2 ACK (ER7, segments end with CR)"})
    results = ma.fields.List(ma.fields.Nested(ResultSchema))


class AlertListArgs(ma.Schema):
    state = ma.fields.String(validate=validate.OneOf(["open", "acknowledged", "resolved"]))
    site_id = Id()
    participant_id = Id()


class AlertSchema(ma.Schema):
    id = ma.fields.Integer()
    kind = ma.fields.String()
    level = ma.fields.String(
        metadata={
            "description": "critical (act now, pages day and night), urgent (act today) or "
            "routine (a task in the morning SMS; no reply, no escalation)"
        }
    )
    state = ma.fields.String()
    participant_id = ma.fields.Integer(allow_none=True)
    study_code = ma.fields.String(allow_none=True)
    site_id = ma.fields.Integer(allow_none=True)
    summary = ma.fields.String()
    # No ack_code: the acknowledgement code is in the SMS of the staff it was sent to, nowhere else.
    tier = ma.fields.Integer()
    next_tier_at = ma.fields.AwareDateTime(allow_none=True)
    opened_at = ma.fields.AwareDateTime()
    acknowledged_at = ma.fields.AwareDateTime(allow_none=True)
    acknowledged_by_user_id = ma.fields.Integer(allow_none=True)
    ack_channel = ma.fields.String(allow_none=True)
    resolved_at = ma.fields.AwareDateTime(allow_none=True)
    resolution_note = ma.fields.String(allow_none=True)
    timeline = ma.fields.List(ma.fields.Dict())
    messages = ma.fields.List(ma.fields.Dict())


class AcknowledgeSchema(ma.Schema):
    note = ma.fields.String(load_default=None, validate=validate.Length(max=1000))


class ResolveSchema(ma.Schema):
    note = ma.fields.String(required=True, validate=validate.Length(min=1, max=1000))
    resume_treatment = StrictBoolean(load_default=False)
    resumed_on = TrialDate(load_default=None)


class OnCallSchema(ma.Schema):
    user_ids = ma.fields.List(Id(strict=True), required=True)


# Alert levels and kinds as the site's settings name them (server/alerts/rules.py).
_LEVELS = ("critical", "urgent", "routine")
_CLINICAL_KINDS = (
    "ctdna_positive",
    "ctdna_positive_baseline",
    "progression",
    "redraw_needed",
    "result_overdue",
    "missed_window",
    "critical_answer",
)
_CLOCK = validate.Regexp(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", error="a time of day, HH:MM")


class NightSchema(ma.Schema):
    start = ma.fields.String(required=True, validate=_CLOCK)
    end = ma.fields.String(required=True, validate=_CLOCK)

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("start") == data.get("end"):
            raise ma.ValidationError("the night must end at another time", field_name="end")


class DigestSchema(ma.Schema):
    at = ma.fields.String(required=True, validate=_CLOCK)
    weekdays = ma.fields.List(
        ma.fields.Integer(strict=True, validate=validate.Range(min=0, max=6)),
        required=True,
        validate=validate.Length(min=1, max=7),
        metadata={"description": "0 = Monday … 6 = Sunday"},
    )

    @ma.validates("weekdays")
    def _distinct(self, value: list[int], **_: Any) -> None:
        if len(set(value)) != len(value):
            raise ma.ValidationError("each weekday once")


class AlertLevelsSchema(ma.Schema):
    """A site's alert-level settings (`page_24_7` always, an empty list if nothing may page at
    night); another left out goes back to its default."""

    levels = ma.fields.Dict(
        keys=ma.fields.String(validate=validate.OneOf(_CLINICAL_KINDS)),
        values=ma.fields.String(validate=validate.OneOf(_LEVELS)),
        metadata={
            "description": "a level per alert kind, over the protocol's (default: none, so each "
            "kind keeps its protocol's level, else its own default)"
        },
    )
    page_24_7 = ma.fields.List(
        ma.fields.String(validate=validate.OneOf((*_LEVELS, *_CLINICAL_KINDS))),
        required=True,
        validate=validate.Length(max=len(_LEVELS) + len(_CLINICAL_KINDS)),
        metadata={
            "description": "the levels and alert kinds whose SMS go out at night too (default: "
            "critical and critical_answer); the others wait for the night's end, and routine "
            "tasks always wait for the morning digest"
        },
    )
    night = ma.fields.Nested(
        NightSchema, metadata={"description": "site time (default 21:00 to 08:00)"}
    )
    digest = ma.fields.Nested(
        DigestSchema,
        metadata={"description": "when routine tasks go out (default 08:00, Monday to Friday)"},
    )

    @ma.validates("page_24_7")
    def _never_routine(self, value: list[str], **_: Any) -> None:
        if "routine" in value:
            raise ma.ValidationError("routine tasks never page at night (the morning digest)")
        if len(set(value)) != len(value):
            raise ma.ValidationError("each level or kind once")


# --- FHIR R4 Observation (the subset POST /results/fhir/Observation reads) --------------------
# The endpoint checks the body against these schemas (422 naming the element), then fhir.resources
# (R4B) validates the whole resource and it is mapped to a ctDNA result. Other Observation
# elements are allowed and ignored.


class FhirSchema(ma.Schema):
    class Meta:
        unknown = ma.INCLUDE


class FhirCodingSchema(FhirSchema):
    system = ma.fields.String()
    code = ma.fields.String(metadata={"description": "e.g. POS, NEG, DET, ND, IND, QNS"})
    display = ma.fields.String()


class FhirCodeableConceptSchema(FhirSchema):
    coding = ma.fields.List(ma.fields.Nested(FhirCodingSchema))
    text = ma.fields.String(metadata={"description": "positive | negative | indeterminate | …"})


class FhirIdentifierSchema(FhirSchema):
    system = ma.fields.String()
    value = ma.fields.String(required=True, validate=validate.Length(min=1, max=64))


class FhirStudyCodeSchema(FhirSchema):
    system = ma.fields.String(
        metadata={"description": "urn:stepdown:study:<STUDY KEY> names the study"}
    )
    value = ma.fields.String(
        required=True,
        validate=validate.Length(min=1, max=32),
        metadata={"description": "the study code"},
    )


class FhirSubjectSchema(FhirSchema):
    identifier = ma.fields.Nested(FhirStudyCodeSchema, required=True)


class FhirQuantitySchema(FhirSchema):
    value = ma.fields.Float(validate=validate.Range(min=0), metadata={"description": "MTM/mL"})
    unit = ma.fields.String()
    system = ma.fields.String()
    code = ma.fields.String()


class FhirPerformerSchema(FhirSchema):
    display = ma.fields.String(metadata={"description": "the lab's name"})


class FhirObservationSchema(FhirSchema):
    resourceType = ma.fields.String(required=True, validate=validate.OneOf(["Observation"]))
    status = ma.fields.String(
        required=True,
        validate=validate.OneOf(
            ["registered", "preliminary", "final", "amended", "corrected", "cancelled"]
        ),
    )
    identifier = ma.fields.List(
        ma.fields.Nested(FhirIdentifierSchema),
        required=True,
        validate=validate.Length(min=1),
        metadata={"description": "the first value is the lab's accession id"},
    )
    code = ma.fields.Nested(
        FhirCodeableConceptSchema,
        required=True,
        metadata={"description": "the assay (text, e.g. Signatera)"},
    )
    subject = ma.fields.Nested(FhirSubjectSchema, required=True)
    effectiveDateTime = TrialDateTime(
        required=True, metadata={"description": "collection time, with its offset"}
    )
    issued = TrialDateTime(metadata={"description": "reported"})
    valueCodeableConcept = ma.fields.Nested(
        FhirCodeableConceptSchema, metadata={"description": "the call"}
    )
    interpretation = ma.fields.List(
        ma.fields.Nested(FhirCodeableConceptSchema),
        metadata={"description": "the call, when valueCodeableConcept does not hold it"},
    )
    valueQuantity = ma.fields.Nested(FhirQuantitySchema)
    performer = ma.fields.List(ma.fields.Nested(FhirPerformerSchema))


# --- acknowledgement times (issue 16 item 4) ---------------------------------------------------

MONTH_PATTERN = r"^\d{4}-\d{2}$"


class AckReportArgs(ma.Schema):
    site_id = Id(metadata={"description": "one of your sites (default: all of them)"})
    from_ = ma.fields.String(
        data_key="from",
        validate=validate.Regexp(MONTH_PATTERN, error="must be a month written YYYY-MM"),
        metadata={"description": "first month (YYYY-MM, site time); default 5 months before to"},
    )
    to = ma.fields.String(
        validate=validate.Regexp(MONTH_PATTERN, error="must be a month written YYYY-MM"),
        metadata={"description": "last month (YYYY-MM, site time); default this month"},
    )


class SpreadSchema(ma.Schema):
    count = ma.fields.Integer(metadata={"description": "alerts that reached this moment"})
    p50 = ma.fields.Float(allow_none=True, metadata={"description": "minutes, nearest rank"})
    p90 = ma.fields.Float(allow_none=True, metadata={"description": "minutes, nearest rank"})
    max = ma.fields.Float(allow_none=True, metadata={"description": "minutes"})


class AckFiguresSchema(ma.Schema):
    alerts = ma.fields.Integer(metadata={"description": "critical and urgent alerts"})
    acknowledged = ma.fields.Integer()
    resolved = ma.fields.Integer()
    minutes_to_first_notification = ma.fields.Nested(SpreadSchema)
    minutes_to_acknowledgement = ma.fields.Nested(SpreadSchema)
    minutes_to_resolution = ma.fields.Nested(SpreadSchema)
    acknowledged_within_30_min = ma.fields.Integer()
    acknowledged_within_30_min_pct = ma.fields.Float(
        allow_none=True, metadata={"description": "of all the alerts (never acknowledged: not)"}
    )
    acknowledged_within_60_min = ma.fields.Integer()
    acknowledged_within_60_min_pct = ma.fields.Float(allow_none=True)
    reached_failsafe = ma.fields.Integer(
        metadata={"description": "alerts that reached the site's fail-safe"}
    )


class AckSiteMonthSchema(AckFiguresSchema):
    site_id = ma.fields.Integer()
    site_code = ma.fields.String()
    month = ma.fields.String(metadata={"description": "YYYY-MM in the site's time zone"})


class AckAlertSchema(ma.Schema):
    alert_id = ma.fields.Integer()
    site_id = ma.fields.Integer()
    site_code = ma.fields.String()
    month = ma.fields.String()
    kind = ma.fields.String()
    level = ma.fields.String()
    study_code = ma.fields.String(allow_none=True)
    received_at = ma.fields.String(metadata={"description": "the result's arrival (UTC)"})
    first_notified_at = ma.fields.String(allow_none=True)
    acknowledged_at = ma.fields.String(allow_none=True)
    resolved_at = ma.fields.String(allow_none=True)
    failsafe_at = ma.fields.String(allow_none=True)
    minutes_to_first_notification = ma.fields.Float(allow_none=True)
    minutes_to_acknowledgement = ma.fields.Float(allow_none=True)
    minutes_to_resolution = ma.fields.Float(allow_none=True)


class AckReportSchema(ma.Schema):
    months = ma.fields.List(ma.fields.String())
    ack_targets_minutes = ma.fields.List(ma.fields.Integer())
    total = ma.fields.Nested(AckFiguresSchema)
    by_site_month = ma.fields.List(ma.fields.Nested(AckSiteMonthSchema))
    alerts = ma.fields.List(ma.fields.Nested(AckAlertSchema))


# --- on-call rotas (issue 16 item 1) -----------------------------------------------------------


class RotaSetSchema(ma.Schema):
    period = ma.fields.String(required=True, validate=validate.OneOf(["daily", "weekly"]))
    handover = ma.fields.String(
        required=True,
        validate=validate.Regexp(r"^([01][0-9]|2[0-3]):[0-5][0-9]$", error="HH:MM, site time"),
        metadata={"description": "the handover's wall-clock time in the site's time zone"},
    )
    handover_weekday = ma.fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=6),
        metadata={"description": "weekly rotas: the handover day, 0 = Monday"},
    )
    starts_on = ma.fields.Date(
        required=True, metadata={"description": "the first shift begins at its first handover"}
    )
    members = ma.fields.List(
        Id(),
        required=True,
        validate=validate.Length(min=1, max=60),
        metadata={"description": "staff user ids of the site, in turn order"},
    )


class RotaOverrideSchema(ma.Schema):
    user_id = Id(required=True)
    starts_at = ma.fields.AwareDateTime(required=True)
    ends_at = ma.fields.AwareDateTime(required=True)
    reason = ma.fields.String(load_default=None, validate=validate.Length(max=200))


class CalendarLinkSchema(ma.Schema):
    url = ma.fields.String(
        metadata={
            "description": "shown once, to its owner only: the secret https address of your "
            "on-call shifts as iCalendar; anyone with it sees your shifts (site codes and "
            "times, no participant information)"
        }
    )
    webcal_url = ma.fields.String(
        metadata={"description": "the same address as webcal://, which calendar apps subscribe to"}
    )
    created_at = ma.fields.AwareDateTime()


class CalendarLinkStateSchema(ma.Schema):
    exists = ma.fields.Boolean(metadata={"description": "whether you hold a live calendar link"})
    created_at = ma.fields.AwareDateTime(
        allow_none=True, metadata={"description": "when it was created or last reset"}
    )
