"""Round trips across the three languages: a ctDNA result a lab sends as an HL7 v2 ORU^R01 comes out
of the FHIR API as the Observation the HL7 message described and out of the ODM export as the same
item, and that Observation posted back through the FHIR way in is the same result, not a second."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import time_machine

from server.results import fhir as fhir_in
from tests.exports.test_odm import NS, export, items
from tests.fhir.test_fhir_read import fhir_get, resources
from tests.results.test_hl7v2 import oru

T0 = datetime(2027, 3, 30, 8, 0, tzinfo=UTC)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def test_a_result_in_by_hl7_v2_is_the_same_fhir_observation_and_odm_item(
    world: Any, db: Any, api_as: Any
) -> None:
    a1 = world.participants["A1"]
    lab = api_as("coordinator", "A")
    with time_machine.travel(T0, tick=False):
        r = lab.client.post(
            "/api/v1/results/hl7v2",
            data=oru(call="POS^Positive^HL70078", mtm="1.24").encode(),
            headers={**lab._headers(), "Content-Type": "x-application/hl7-v2+er7"},
        )
        assert r.status_code == 201, r.get_json()
        result_id = r.get_json()["results"][0]["id"]

        bundle = fhir_get(
            api_as("nurse", "A"), f"/fhir/Observation?code=ctdna&subject=Patient/{a1.id}"
        )
    (obs,) = resources(bundle)
    # What the HL7 message said, element by element.
    assert "NT-2027-0042" in {i["value"] for i in obs["identifier"]}  # OBR-3.1
    assert instant(obs["effectiveDateTime"]) == datetime(2027, 3, 29, 7, 0, tzinfo=UTC)  # OBR-7
    assert instant(obs["issued"]) == datetime(2027, 3, 30, 7, 15, tzinfo=UTC)  # OBR-22
    assert obs["interpretation"][0]["coding"][0]["code"] == "POS"  # OBX-5 POS^Positive
    assert obs["valueQuantity"]["value"] == 1.24  # OBX-5 of the {MTM}/mL observation
    assert obs["valueQuantity"]["code"] == "{MTM}/mL"
    assert obs["subject"]["reference"] == f"Patient/{a1.id}"
    assert obs["subject"]["identifier"]["value"] == "A-001"  # PID-3

    # The ODM export's item for that draw says the same.
    subject = ET.fromstring(export(db, world).xml).find(
        ".//odm:SubjectData[@SubjectKey='A-001']", NS
    )
    [item] = [d for d in items(subject, "Event.ctdna_draw") if "ctdna_accession" in d]
    back = fhir_in.observation_to_ctdna(obs)
    assert back["accession_id"] == item["ctdna_accession"] == "NT-2027-0042"
    assert back["study_code"] == "A-001" and back["study"] == "HEROES"
    assert back["call"] == item["ctdna_call"] == "positive"
    assert back["mtm_per_ml"] == float(item["ctdna_mtm_per_ml"]) == 1.24
    assert instant(item["ctdna_collected_at"]) == instant(obs["effectiveDateTime"])
    assert instant(item["ctdna_reported_at"]) == instant(obs["issued"])

    # Posted back through the FHIR way in, the Observation is the result already recorded.
    with time_machine.travel(T0, tick=False):
        again = lab.post("/api/v1/results/fhir/Observation", json=obs)
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == result_id
