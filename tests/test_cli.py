"""The `stepdown` commands a new user runs."""

from __future__ import annotations

from sqlmodel import select

from server.auth.models import Role, StaffUser
from server.cli import DEMO_PASSWORD
from server.participants.models import Participant


def test_seed_demo_creates_two_sites_every_role_and_logins_that_work(app, db, client):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed-demo"])
    assert result.exit_code == 0, result.output
    assert DEMO_PASSWORD in result.output
    users = db.exec(select(StaffUser)).all()
    roles_per_site = {(u.role, u.email.split("@")[0].split(".")[-1]) for u in users}
    for site in ("paris", "boston"):
        for role in (Role.INVESTIGATOR, Role.COORDINATOR, Role.NURSE, Role.MONITOR):
            assert (role, site) in roles_per_site
    assert len(db.exec(select(Participant)).all()) >= 4
    # A printed login gets a token and sees only its own site's participants.
    email = "nurse.paris@demo.stepdown.test"
    assert email in result.output
    token = client.post(
        "/api/v1/auth/token", json={"email": email, "password": DEMO_PASSWORD}
    ).get_json()["token"]
    listed = client.get("/api/v1/participants", headers={"Authorization": f"Bearer {token}"})
    sites = {p["site_code"] for p in listed.get_json()["items"]}
    assert sites == {"PARIS-01"}
    # Running it again with --if-empty is harmless.
    again = runner.invoke(args=["seed-demo", "--if-empty"])
    assert again.exit_code == 0
    assert len(db.exec(select(StaffUser)).all()) == len(users)


def test_create_admin(app, db):
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["create-admin", "--email", "Root@Example.test", "--password", "a very long password"]
    )
    assert result.exit_code == 0, result.output
    user = db.exec(select(StaffUser).where(StaffUser.email == "root@example.test")).one()
    assert user.role == Role.ADMIN
    short = runner.invoke(args=["create-admin", "--email", "x@example.test", "--password", "short"])
    assert short.exit_code != 0
    assert "at least 12" in short.output
