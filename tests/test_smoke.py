from __future__ import annotations


def test_healthz_answers_when_database_does(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok", "database": "ok"}


def test_world_builds(world, api_as):
    resp = api_as("nurse", "A").get("/api/v1/participants")
    assert resp.status_code == 200, resp.get_json()
    codes = [p["study_code"] for p in resp.get_json()["items"]]
    assert codes == ["A-001", "A-002"]
