"""Scoping on every FHIR route: another site's participant is 404 and never in a Bundle; a
participant's app token reaches only their own record, schedule, questionnaires and scores."""

from __future__ import annotations

from typing import Any

from tests.fhir.conftest import validate
from tests.fhir.test_fhir_read import TYPES, resources

# Not about a participant: every caller with a token sees the same.
SHARED = {"ResearchStudy", "Questionnaire"}


class Bearer:
    def __init__(self, client: Any, token: str) -> None:
        self.client, self.token = client, token

    def get(self, path: str) -> Any:
        return self.client.get(path, headers={"Authorization": f"Bearer {self.token}"})


def _everything(api: Any) -> dict[str, set[str]]:
    out = {}
    for resource_type in TYPES:
        resp = api.get(f"/fhir/{resource_type}?_count=200")
        assert resp.status_code == 200, (resource_type, resp.get_data(as_text=True))
        out[resource_type] = {r["id"] for r in resources(resp.get_json(force=True))}
    return out


def test_another_sites_staff_see_nothing_of_site_a(scene, api_as):
    site_a = _everything(api_as("admin", "A"))
    a_ids = {t: ids for t, ids in site_a.items() if t not in SHARED}
    assert all(a_ids.values()), a_ids
    for role in ("nurse", "coordinator", "monitor", "admin"):
        b = api_as(role, "B")
        site_b = _everything(b)
        for resource_type, ids in a_ids.items():
            assert not ids & site_b[resource_type], (role, resource_type)
            for resource_id in ids:
                resp = b.get(f"/fhir/{resource_type}/{resource_id}")
                assert resp.status_code == 404, (role, resource_type, resource_id)
                assert validate(resp.get_json(force=True)).issue[0].code == "not-found"
        # Naming site A's participant in a search finds nothing either.
        for path in (
            f"/fhir/Observation?subject=Patient/{scene.a1}",
            "/fhir/Observation?subject:identifier=A-001",
            f"/fhir/Flag?patient={scene.a1}",
            f"/fhir/Communication?subject={scene.a1}",
            f"/fhir/QuestionnaireResponse?subject=Patient/{scene.a1}",
            f"/fhir/CarePlan?subject=Patient/{scene.a1}",
            "/fhir/Patient?identifier=A-001",
            f"/fhir/ResearchSubject?patient={scene.a1}",
        ):
            bundle = b.get(path).get_json(force=True)
            assert bundle["total"] == 0 and "entry" not in bundle, (role, path)
    # Site B's own participant is there for B, and not for A.
    assert str(scene.b1) in _everything(api_as("nurse", "B"))["Patient"]
    assert str(scene.b1) not in site_a["Patient"]


def test_a_participant_token_reads_only_its_own(scene, client, app_token, api_as):
    me = Bearer(client, app_token("A1"))
    mine = _everything(me)
    a2 = scene.world.participants["A2"].id
    assert mine["Patient"] == mine["ResearchSubject"] == mine["CarePlan"] == {str(scene.a1)}
    assert mine["QuestionnaireResponse"] == {str(scene.response_id)}
    assert mine["Observation"] and all(i.startswith("score-") for i in mine["Observation"])
    assert mine["ResearchStudy"] == {"HEROES"}
    assert mine["Flag"] == mine["Communication"] == set()
    for path in (
        f"/fhir/Patient/{a2}",
        f"/fhir/CarePlan/{scene.b1}",
        f"/fhir/Flag/{scene.alert_id}",
    ):
        assert me.get(path).status_code == 404, path
    staff_view = _everything(api_as("nurse", "A"))
    for result_id in (i for i in staff_view["Observation"] if i.startswith("result-")):
        assert me.get(f"/fhir/Observation/{result_id}").status_code == 404
    # Their schedule names no result (those are the care team's to give) and no decision point.
    staff_plan = api_as("nurse", "A").get(f"/fhir/CarePlan/{scene.a1}").get_data(as_text=True)
    assert "Observation/result-" in staff_plan
    my_plan = me.get(f"/fhir/CarePlan/{scene.a1}").get_json(force=True)
    validate(my_plan)
    assert "Observation/result-" not in str(my_plan)
    assert "decision_point" not in str(my_plan)
    other = Bearer(client, app_token("A2"))
    assert other.get(f"/fhir/QuestionnaireResponse/{scene.response_id}").status_code == 404
    assert _everything(other)["Observation"] == set()


def test_a_revoked_or_expired_token_gets_nothing(scene, client, db, app_token):
    from sqlmodel import select

    from server.participants.mobile import ParticipantToken

    token = app_token("A1")
    row = db.exec(select(ParticipantToken)).one()
    from tests.clock import utcnow

    row.revoked_at = utcnow()
    db.add(row)
    db.commit()
    assert Bearer(client, token).get(f"/fhir/Patient/{scene.a1}").status_code == 401
