"""The FHIR API's test scene: site A's participant A1 with a questionnaire answered, a ctDNA
result that opened an alert, a scan and a tumour marker; site B's B1 with a result of her own."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from fhir.resources.R4B import get_fhir_model_class
from sqlmodel import Session, select

from server.participants.mobile import ParticipantToken
from server.schedules.models import ScheduleEvent
from server.surveys import service as surveys
from tests import factories

ANSWERED = datetime(2027, 1, 5, 10, 0, tzinfo=UTC)  # qol:1 of the world's anchor (2027-01-04)
T0 = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)
FHIR_JSON = "application/fhir+json"


def validate(resource: dict[str, Any]) -> Any:
    """Parse a resource with the fhir.resources R4B model of its type (raises when invalid)."""
    model = get_fhir_model_class(resource["resourceType"])
    return model.model_validate(resource)


def qlq(**over: int) -> dict[str, int]:
    answers = {f"q{i}": 2 for i in range(1, 29)}
    answers.update({"q29": 5, "q30": 6})
    answers.update(over)
    return answers


def ctdna(code: str, accession: str, call: str, **kw: Any) -> dict[str, Any]:
    return {
        "lab": "natera",
        "study": "HEROES",
        "study_code": code,
        "accession_id": accession,
        "collected_at": "2027-03-29T09:00:00+02:00",
        "call": call,
        "mtm_per_ml": 0.42 if call == "positive" else 0.0,
        **kw,
    }


@dataclass
class Scene:
    world: factories.World
    alert_id: int
    response_id: int
    a1: int
    b1: int


def event(db: Session, participant_id: int, key: str) -> ScheduleEvent:
    return db.exec(
        select(ScheduleEvent).where(
            ScheduleEvent.participant_id == participant_id, ScheduleEvent.key == key
        )
    ).one()


@pytest.fixture
def scene(world: factories.World, db: Session, api_as: Any) -> Scene:
    a1, b1 = world.participants["A1"], world.participants["B1"]
    with time_machine.travel(ANSWERED, tick=False):
        response = surveys.save(
            session=db,
            participant=a1,
            event=event(db, a1.id, "qol:1"),  # type: ignore[arg-type]
            answers=qlq(),
            submit=True,
            channel="web",
            now=ANSWERED,
        )
        db.commit()
    lab_a, lab_b = api_as("coordinator", "A"), api_as("coordinator", "B")
    with time_machine.travel(T0, tick=False):
        assert (
            lab_a.post(
                "/api/v1/results/ctdna",
                json=ctdna("A-001", "BASE-1", "negative", collected_at="2026-12-20T09:00:00+01:00"),
            ).status_code
            == 201
        )
        r = lab_a.post("/api/v1/results/ctdna", json=ctdna("A-001", "ACC-1", "positive"))
        assert r.status_code == 201, r.get_json()
        alert_id = r.get_json()["alert_id"]
        assert alert_id
        scan = {
            "lab": "radiology",
            "study": "HEROES",
            "study_code": "A-001",
            "accession_id": "IMG-1",
            "performed_on": "2027-03-28",
            "modality": "CT",
            "recist": "CR",
        }
        assert lab_a.post("/api/v1/results/imaging", json=scan).status_code == 201, "scan"
        marker = {
            "lab": "chu",
            "study": "HEROES",
            "study_code": "A-001",
            "accession_id": "CA-1",
            "collected_at": "2027-03-29T09:00:00+02:00",
            "marker": "CA15-3",
            "value": 21.5,
            "unit": "U/mL",
        }
        assert lab_a.post("/api/v1/results/tumor-markers", json=marker).status_code == 201
        r = lab_b.post("/api/v1/results/ctdna", json=ctdna("B-001", "ACC-B", "negative"))
        assert r.status_code == 201, r.get_json()
    return Scene(world, alert_id, response.id, a1.id, b1.id)  # type: ignore[arg-type]


@pytest.fixture
def app_token(db: Session, world: factories.World) -> Any:
    """app_token("A1") → the participant's companion-app bearer token."""

    def make(key: str) -> str:
        clear = f"app-token-{key}"
        db.add(
            ParticipantToken(
                participant_id=world.participants[key].id,
                token_hash=hashlib.sha256(clear.encode()).hexdigest(),
                created_at=datetime.now(UTC),
                expires_at=datetime.now(UTC) + timedelta(days=3650),
            )
        )
        db.commit()
        return clear

    return make
