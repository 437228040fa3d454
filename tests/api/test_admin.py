"""Admins manage sites and users; other roles cannot."""

from __future__ import annotations

import pytest
from sqlmodel import select

from server.audit import AuditEvent


def test_admin_creates_user_with_sites(world, api_as, db):
    resp = api_as("admin", "A").post(
        "/api/v1/users",
        json={
            "email": "New.Nurse@Example.test",
            "full_name": "New Nurse",
            "password": "a long enough password",
            "role": "nurse",
            "phone": "+33 6 11 22 33 44",
            "site_ids": [world.sites["A"].id],
        },
    )
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["email"] == "new.nurse@example.test"
    assert body["phone"] == "+33611223344"
    assert body["is_phone_verified"] is False
    assert body["site_ids"] == [world.sites["A"].id]
    assert "password" not in body
    event = db.exec(
        select(AuditEvent).where(
            AuditEvent.action == "user.create", AuditEvent.entity_id == str(body["id"])
        )
    ).one()
    assert event.after["role"] == "nurse"
    assert "password_hash" not in event.after


@pytest.mark.parametrize("role", ["investigator", "coordinator", "nurse", "monitor"])
def test_only_admins_manage_users_and_sites(world, api_as, role):
    api = api_as(role, "A")
    assert api.get("/api/v1/users").status_code == 403
    resp = api.post(
        "/api/v1/sites",
        json={"code": "X", "name": "X", "country": "FR", "timezone": "Europe/Paris"},
    )
    assert resp.status_code == 403


def test_site_validation(world, api_as):
    resp = api_as("admin", "A").post(
        "/api/v1/sites", json={"code": "LYON", "name": "Lyon", "country": "FR", "timezone": "Lyon"}
    )
    assert resp.status_code == 422
    assert "timezone" in resp.get_json()["error"]["fields"]


def test_users_see_only_their_sites(world, api_as):
    codes = [s["code"] for s in api_as("nurse", "A").get("/api/v1/sites").get_json()]
    assert codes == ["SITE-A"]


def test_admin_changes_membership_and_visibility_follows(world, api_as):
    nurse = world.staff[("nurse", "A")]
    nurse_api = api_as("nurse", "A")
    b1 = world.participants["B1"]
    assert nurse_api.get(f"/api/v1/participants/{b1.id}").status_code == 404
    resp = api_as("admin", "A").patch(
        f"/api/v1/users/{nurse.id}", json={"site_ids": [world.sites["A"].id, world.sites["B"].id]}
    )
    assert resp.status_code == 200, resp.get_json()
    assert nurse_api.get(f"/api/v1/participants/{b1.id}").status_code == 200


def test_admin_cannot_lock_themselves_out(world, api_as):
    admin = world.staff[("admin", "A")]
    resp = api_as("admin", "A").patch(f"/api/v1/users/{admin.id}", json={"is_active": False})
    assert resp.status_code == 409
