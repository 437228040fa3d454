"""Pure decisions about participants: phone numbers, time zones, status transitions."""

from __future__ import annotations

import functools
import zoneinfo

import phonenumbers

from notifications.messages import (
    SUPPORTED_LOCALES,
    HealthInformationError,
    MessageKind,
    assert_no_health_information,
    render,
)
from server.participants.models import ParticipantStatus as S

# Fields whose change alters trial data and therefore needs a reason in the audit trail.
TRIAL_DATA_FIELDS = frozenset({"study_code", "site_id", "cohort", "anchor_date", "status"})

ALLOWED_TRANSITIONS: dict[S, frozenset[S]] = {
    S.SCREENING: frozenset(
        {S.ACTIVE, S.OFF_TREATMENT_MONITORING, S.CONTINUES_MAINTENANCE, S.WITHDRAWN}
    ),
    S.ACTIVE: frozenset(
        {S.OFF_TREATMENT_MONITORING, S.RESUMED_TREATMENT, S.COMPLETED, S.WITHDRAWN}
    ),
    S.OFF_TREATMENT_MONITORING: frozenset({S.RESUMED_TREATMENT, S.COMPLETED, S.WITHDRAWN}),
    S.RESUMED_TREATMENT: frozenset({S.OFF_TREATMENT_MONITORING, S.COMPLETED, S.WITHDRAWN}),
    # Out of the trial's follow-up after the entry gate; the investigator's override can still
    # send them into monitoring.
    S.CONTINUES_MAINTENANCE: frozenset({S.OFF_TREATMENT_MONITORING, S.WITHDRAWN}),
    # Completed and withdrawn are final: a correction is a new, audited decision, not an edit.
    S.COMPLETED: frozenset(),
    S.WITHDRAWN: frozenset(),
}


def can_transition(current: S, new: S) -> bool:
    """Whether a participant may move from one status to another."""
    return current == new or new in ALLOWED_TRANSITIONS[current]


def study_code_problem(code: str) -> str | None:
    """Why a study code cannot be used in SMS, or None. The code is in every text message to the
    participant and to the care team, and the guard refuses any SMS with a health word, drug or
    trial name in it: a code such as "X-HEROES-01" would make every one of them fail."""
    try:
        assert_no_health_information(code)
        # Also as the messages place it (a term could form across the code and its neighbours).
        for locale in SUPPORTED_LOCALES:
            render(MessageKind.WELCOME, locale, code=code)
    except HealthInformationError as exc:
        term = str(exc).rpartition(" ")[2]
        return (
            f"contains {term}, a word no SMS may carry (health information or a trial name); "
            "the code appears in every text message: choose one without it"
        )
    return None


def normalise_phone(raw: str, region: str | None) -> str:
    """Parse a phone number (international, or national for the site's region) to E.164."""
    try:
        number = phonenumbers.parse(raw, None if raw.strip().startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError("not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def is_valid_timezone(name: str) -> bool:
    """Whether a name is an IANA time zone known to tzdata."""
    return name in _zones()


def mask_phone(e164: str | None) -> str | None:
    """Hide all but the last two digits (for roles that must not see phone numbers)."""
    if not e164:
        return e164
    return e164[:3] + "•" * max(0, len(e164) - 5) + e164[-2:]


# Countries where one of our message languages is the language people are addressed in by
# default; anywhere else (multilingual countries such as Belgium, Switzerland, Canada or
# Singapore included) it is English, and staff pick the participant's own language.
_COUNTRY_LANGUAGE = {
    **dict.fromkeys(
        ("FR", "MC", "GP", "MQ", "GF", "RE", "YT", "PM", "BL", "MF", "WF", "PF", "NC"), "fr"
    ),
    **dict.fromkeys(("CN", "TW", "HK", "MO"), "zh"),
}


def default_locale(country: str | None) -> str:
    """The message language a participant at a site in this country (ISO 3166 alpha-2) gets
    unless staff choose another: French or Chinese where that is the country's language, else
    English."""
    return _COUNTRY_LANGUAGE.get((country or "").upper(), "en")
