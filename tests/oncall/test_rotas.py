"""On-call rotas (issue 16 item 1) under a frozen clock: the handover stays at the site's wall-clock
time across DST (Paris in March, New York in November), an override for a holiday wins and ends,
who is on call now and next (API and page), the iCalendar feed, the first tier of a critical
alert reaches the rota's primary, and a shift falling to someone without a verified phone shows
on Today and in the dead-route check."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import icalendar
import time_machine
from sqlmodel import select

from server.alerts import service as alerts
from server.audit import AuditEvent
from server.oncall import rules
from tests.results.test_results_alerts import (
    care_team,
    ctdna,
    post_negative_baseline,
    staff_sms,
)

__all__ = ["care_team"]

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def at(moment: datetime):
    return time_machine.travel(moment, tick=False)


def test_daily_handover_stays_at_0800_paris_across_the_spring_dst_change():
    spec = rules.RotaSpec(
        zone=PARIS, period="daily", handover=time(8, 0), starts_on=date(2027, 3, 26),
        members=[1, 2, 3],
    )  # fmt: skip
    # 2027-03-28 02:00 Paris jumps to 03:00: the shift of the 27th lasts 23 hours.
    shifts = rules.shifts(
        spec, [], datetime(2027, 3, 26, 7, 0, tzinfo=UTC), datetime(2027, 3, 30, 6, 0, tzinfo=UTC)
    )
    assert [(s.user_id, s.starts_at.astimezone(PARIS).strftime("%d %H:%M")) for s in shifts] == [
        (1, "26 08:00"),
        (2, "27 08:00"),
        (3, "28 08:00"),
        (1, "29 08:00"),
    ]
    assert [s.ends_at - s.starts_at for s in shifts[:3]] == [
        timedelta(hours=24),
        timedelta(hours=23),
        timedelta(hours=24),
    ]
    # One minute before the handover it is still yesterday's person, at it the next one.
    before = datetime(2027, 3, 28, 5, 59, tzinfo=UTC)  # 07:59 in Paris (summer time)
    assert rules.turn_at(spec, before).user_id == 2  # type: ignore[union-attr]
    assert rules.turn_at(spec, before + timedelta(minutes=1)).user_id == 3  # type: ignore[union-attr]
    assert rules.turn_at(spec, datetime(2027, 3, 26, 6, 59, tzinfo=UTC)) is None  # not started


def test_weekly_handover_on_monday_0900_new_york_across_the_autumn_dst_change():
    spec = rules.RotaSpec(
        zone=NEW_YORK, period="weekly", handover=time(9, 0), starts_on=date(2027, 10, 27),
        members=[7, 8], handover_weekday=0,
    )  # fmt: skip
    first = rules.turn_at(spec, datetime(2027, 11, 2, 12, 0, tzinfo=UTC))
    assert first is not None and first.user_id == 7
    # The first handover is the Monday after starts_on; clocks fall back on Sunday 7 November.
    assert first.starts_at.astimezone(NEW_YORK).strftime("%a %d %H:%M") == "Mon 01 09:00"
    assert first.ends_at.astimezone(NEW_YORK).strftime("%a %d %H:%M") == "Mon 08 09:00"
    assert first.ends_at - first.starts_at == timedelta(hours=169)
    second = rules.turn_at(spec, first.ends_at)
    assert second is not None and second.user_id == 8
    assert second.ends_at - second.starts_at == timedelta(hours=168)


def _set(api, site_id, layer="primary", **kw):
    body = {
        "period": "daily",
        "handover": "08:00",
        "starts_on": "2027-03-26",
        "members": [],
        **kw,
    }
    return api.client.put(
        f"/api/v1/sites/{site_id}/rotas/{layer}", json=body, headers=api._headers()
    )


def test_rota_override_now_next_and_the_calendar(world, db, api_as, web_as, care_team):
    site = world.sites["A"]
    nurse, coordinator = world.staff[("nurse", "A")], world.staff[("coordinator", "A")]
    coordinator_api = api_as("coordinator", "A")
    with at(datetime(2027, 3, 26, 12, 0, tzinfo=UTC)):
        r = _set(coordinator_api, site.id, members=[nurse.id, coordinator.id])
        assert r.status_code == 200, r.get_json()
        primary = r.get_json()["layers"][0]
        assert primary["now"]["user_id"] == nurse.id
        assert primary["now"]["ends_local"] == "2027-03-27 08:00"
        assert primary["next"]["user_id"] == coordinator.id
        # Bad input is a 4xx, another site's staff is refused, another site is 404.
        assert _set(coordinator_api, site.id, handover="8h").status_code == 422
        stranger = world.staff[("nurse", "B")].id
        assert _set(coordinator_api, site.id, members=[stranger]).status_code == 422
        assert _set(coordinator_api, world.sites["B"].id, members=[nurse.id]).status_code == 404
        assert _set(api_as("monitor", "A"), site.id, members=[nurse.id]).status_code == 403
        # An override: the coordinator covers the nurse's afternoon (a day off, a holiday).
        r = coordinator_api.post(
            f"/api/v1/sites/{site.id}/rotas/primary/overrides",
            json={
                "user_id": coordinator.id,
                "starts_at": "2027-03-26T13:00:00Z",
                "ends_at": "2027-03-26T19:00:00Z",
                "reason": "nurse at the dentist",
            },
        )
        assert r.status_code == 201, r.get_json()
        bad = coordinator_api.post(
            f"/api/v1/sites/{site.id}/rotas/primary/overrides",
            json={"user_id": nurse.id, "starts_at": "2027-03-26T19:00:00Z",
                  "ends_at": "2027-03-26T13:00:00Z"},
        )  # fmt: skip
        assert bad.status_code == 422
    with at(datetime(2027, 3, 26, 14, 0, tzinfo=UTC)):
        layer = coordinator_api.get(f"/api/v1/sites/{site.id}/rotas").get_json()["layers"][0]
        assert layer["now"]["user_id"] == coordinator.id and layer["now"]["is_override"]
        # Next: the nurse again when the override ends, then the coordinator's own turn.
        assert layer["next"]["user_id"] == nurse.id
        assert layer["next"]["starts_at"] == "2027-03-26T19:00:00+00:00"
        html = web_as("monitor", "A").text("/oncall")
        assert "override" in html and coordinator.full_name in html
    with at(datetime(2027, 3, 26, 20, 0, tzinfo=UTC)):
        layer = coordinator_api.get(f"/api/v1/sites/{site.id}/rotas").get_json()["layers"][0]
        assert layer["now"]["user_id"] == nurse.id and not layer["now"]["is_override"]
        # The nurse's calendar: today's shift cut by the override, and every other day's.
        ics = api_as("nurse", "A").get("/api/v1/me/oncall.ics")
        assert ics.status_code == 200 and ics.mimetype == "text/calendar"
        cal = icalendar.Calendar.from_ical(ics.get_data())
        events = [e for e in cal.walk("VEVENT")]
        starts = [e.decoded("dtstart").astimezone(PARIS).strftime("%d %H:%M") for e in events]
        assert starts[:3] == ["26 08:00", "26 20:00", "28 08:00"]
        assert all(str(e.get("summary")) == "On call (primary) · SITE-A" for e in events)
    actions = [e.action for e in db.exec(select(AuditEvent)).all()]
    assert actions.count("rota.set") == 1 and actions.count("rota.override") == 1


def test_a_critical_alert_reaches_the_rotas_primary_first(world, db, api_as, care_team):
    site = world.sites["A"]
    investigator = world.staff[("investigator", "A")]
    lab = api_as("coordinator", "A")
    with at(datetime(2027, 3, 29, 12, 0, tzinfo=UTC)):
        assert _set(lab, site.id, members=[investigator.id]).status_code == 200
        post_negative_baseline(lab)
        alert_id = lab.post("/api/v1/results/ctdna", json=ctdna()).get_json()["alert_id"]
    # Not the nurse marked on call: the rota's primary now.
    assert [m.to_e164 for m in staff_sms(db, alert_id)] == [care_team["investigator"]]
    assert alerts.recipients(db, site.id, "rota:backup") == []


def test_a_shift_without_a_verified_phone_shows_on_today_and_the_dead_route_check(
    world, db, api_as, web_as
):
    site = world.sites["A"]
    nurse = world.staff[("nurse", "A")]  # no verified phone in the plain world
    admin_api = api_as("admin", "A")
    with at(datetime(2027, 3, 26, 12, 0, tzinfo=UTC)):
        assert _set(admin_api, site.id, layer="backup", members=[nurse.id]).status_code == 200
        health = admin_api.get(f"/api/v1/sites/{site.id}/escalation").get_json()
        rota = next(t for t in health["tiers"] if t["route"] == "rota")
        assert rota["is_dead"] and rota["recipients"] == "rota:backup"
        assert (
            "backup shift from Fri 2027-03-26 13:00 has nobody with a verified phone"
            in rota["warning"]
        )
        html = web_as("admin", "A").text("/")
        assert "has nobody with a verified phone" in html
        page = web_as("nurse", "A").text("/oncall")
        assert "without a verified phone" in page
