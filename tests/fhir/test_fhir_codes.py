"""Every status Stepdown can hold has its FHIR code: a status added to a model without one would
make the FHIR API fail on the first participant, event or SMS that takes it."""

from __future__ import annotations

import enum

import pytest

from notifications.models import MessageStatus
from server.fhir import codes
from server.participants.models import ParticipantStatus
from server.schedules.models import EventStatus

R4_SUBJECT = {
    "candidate", "eligible", "follow-up", "ineligible", "not-registered", "off-study", "on-study",
    "on-study-intervention", "on-study-observation", "pending-on-study", "potential-candidate",
    "screening", "withdrawn",
}  # fmt: skip
R4_ACTIVITY = {
    "not-started", "scheduled", "in-progress", "on-hold", "completed", "cancelled", "stopped",
    "unknown", "entered-in-error",
}  # fmt: skip
R4_EVENT = {
    "preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
    "entered-in-error", "unknown",
}  # fmt: skip


@pytest.mark.parametrize(
    ("ours", "mapping", "theirs"),
    [
        (ParticipantStatus, codes.SUBJECT_STATUS, R4_SUBJECT),
        (EventStatus, codes.ACTIVITY_STATUS, R4_ACTIVITY),
        (MessageStatus, codes.COMMUNICATION_STATUS, R4_EVENT),
    ],
)
def test_every_status_has_an_r4_code(
    ours: type[enum.StrEnum], mapping: dict[str, str], theirs: set[str]
) -> None:
    assert {s.value for s in ours} == set(mapping)
    assert set(mapping.values()) <= theirs


def test_a_participant_who_failed_the_entry_gate_is_off_study(scene, db, api_as) -> None:
    """HEROES' positive baseline: continues maintenance, not followed further (off-study)."""
    from server.participants.models import Participant
    from tests.fhir.test_fhir_read import fhir_get

    a1 = db.get(Participant, scene.a1)
    a1.status = ParticipantStatus.CONTINUES_MAINTENANCE
    db.add(a1)
    db.commit()
    subject = fhir_get(api_as("nurse", "A"), f"/fhir/ResearchSubject/{scene.a1}")
    assert subject["status"] == "off-study"
