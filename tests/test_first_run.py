"""A new user's first run (issue 12, item 7): `stepdown --help` lists Stepdown's commands and
`--version` is Stepdown's; `protocol preview` shows weekdays and offsets and says what is wrong
with its input; links follow PORT in development (the demo seed included); the scheduler logs a
job at INFO only when it did something; `make run` ends with the URLs and the logins; the API
reference has a table of contents by tag; every page's /favicon.ico exists."""

from __future__ import annotations

import logging
import re
from datetime import date
from importlib.metadata import version
from typing import Any

import pytest
from click.testing import CliRunner
from sqlmodel import select

from config import settings
from notifications.models import OutboxMessage
from server import scheduler
from server.cli import build_cli, login_lines
from server.devrun import ROUTINE, banner
from server.protocols.rules import offset_from_anchor, weekday_date

STEPDOWN_COMMANDS = {
    "create-admin",
    "db",
    "dispatcher",
    "openapi",
    "protocol",
    "results",
    "run",
    "scheduler",
    "seed-demo",
}


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("STEPDOWN_ENV", "testing")
    return build_cli()


def test_help_lists_stepdowns_commands_and_not_flasks(cli):
    result = CliRunner().invoke(cli, ["--help"], prog_name="stepdown")
    assert result.exit_code == 0, result.output
    listed = set(re.findall(r"^  ([a-z][a-z-]+)\s", result.output.split("Commands:")[1], re.M))
    assert listed >= STEPDOWN_COMMANDS
    assert not listed & {"routes", "shell", "limiter"}
    # Flask's own options are gone too; --version is Stepdown's.
    for flask_option in ("--app", "--env-file", "--debug"):
        assert flask_option not in result.output
    refused = CliRunner().invoke(cli, ["shell"], prog_name="stepdown")
    assert refused.exit_code != 0 and "No such command" in refused.output
    shown = CliRunner().invoke(cli, ["--version"], prog_name="stepdown")
    assert shown.output.strip() == f"stepdown {version('stepdown')}"
    assert "Flask" not in shown.output


def test_protocol_preview_shows_weekday_and_offset(app):
    result = app.test_cli_runner().invoke(
        args=["protocol", "preview", "HEROES", "--cohort", "stop", "--anchor", "2027-01-04"]
    )
    assert result.exit_code == 0, result.output
    assert re.search(
        r"^Mon 2027-03-29 09:00 · week 12\s+2027-03-22 → 2027-04-05", result.output, re.M
    )
    assert re.search(r"^Sun 2027-04-04 09:00 · month 3\s", result.output, re.M)
    assert re.search(r"^Mon 2027-01-04 09:00 · anchor day\s", result.output, re.M)


def test_protocol_preview_says_what_is_wrong(app):
    runner = app.test_cli_runner()
    # STOP-HER2's cohort is the coordinator's to choose (HEROES's entry gate picks its own).
    no_cohort = runner.invoke(args=["protocol", "preview", "STOP-HER2", "--anchor", "2027-01-04"])
    assert no_cohort.exit_code == 2
    assert "--cohort is required for STOP-HER2: one of stop, continue" in no_cohort.output
    french = runner.invoke(
        args=["protocol", "preview", "HEROES", "--cohort", "stop", "--anchor", "04/01/2027"]
    )
    assert french.exit_code == 2
    assert "'04/01/2027' is not a date written YYYY-MM-DD" in french.output
    assert "Invalid isoformat" not in french.output


@pytest.mark.parametrize(
    ("anchor", "day", "words"),
    [
        ("2027-01-04", "2027-03-29", "week 12"),
        ("2027-01-04", "2027-04-04", "month 3"),
        ("2027-01-04", "2028-01-04", "month 12"),
        ("2027-01-04", "2027-01-04", "anchor day"),
        ("2027-01-04", "2026-12-14", "week -3"),
        ("2027-01-04", "2027-02-18", "day 45"),
        ("2027-01-31", "2027-02-28", "week 4"),
    ],
)
def test_offsets_from_the_anchor(anchor, day, words):
    assert offset_from_anchor(date.fromisoformat(anchor), date.fromisoformat(day)) == words


def test_weekday_date():
    assert weekday_date(date(2027, 3, 29)) == "Mon 2027-03-29"
    assert weekday_date(date(2027, 4, 4)) == "Sun 2027-04-04"


def test_links_follow_port_in_development(monkeypatch):
    for name in ("PUBLIC_BASE_URL", "TWILIO_BASE_URL", "PORT", "FAKE_TWILIO_PORT"):
        monkeypatch.delenv(name, raising=False)
    default = settings.DevelopmentConfig()
    assert default.PUBLIC_BASE_URL == "http://127.0.0.1:8000"
    assert default.TWILIO_BASE_URL == "http://127.0.0.1:8010"
    monkeypatch.setenv("PORT", "8300")
    monkeypatch.setenv("FAKE_TWILIO_PORT", "8310")
    moved = settings.DevelopmentConfig()
    assert moved.PUBLIC_BASE_URL == "http://127.0.0.1:8300"
    assert moved.TWILIO_BASE_URL == "http://127.0.0.1:8310"
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://tunnel.example.org/")
    assert settings.DevelopmentConfig().PUBLIC_BASE_URL == "https://tunnel.example.org"
    monkeypatch.setenv("PORT", "80a")
    with pytest.raises(settings.ConfigError, match="PORT must be a port number"):
        settings.DevelopmentConfig()
    # Only development reads PORT (production needs its own https:// PUBLIC_BASE_URL).
    monkeypatch.setenv("PORT", "8300")
    monkeypatch.delenv("PUBLIC_BASE_URL")
    assert settings.TestingConfig().PUBLIC_BASE_URL == "http://127.0.0.1:8000"


def test_the_demo_seed_links_to_the_port(monkeypatch, app, db):
    """`make run PORT=8300` seeds with PORT set: the demo's SMS link to :8300."""
    monkeypatch.delenv("PUBLIC_BASE_URL", raising=False)
    monkeypatch.setenv("PORT", "8300")
    monkeypatch.setitem(app.config, "PUBLIC_BASE_URL", settings.DevelopmentConfig().PUBLIC_BASE_URL)
    result = app.test_cli_runner().invoke(args=["seed-demo", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "links to http://127.0.0.1:8300" in result.output
    assert "stepdown-demo-2026" not in result.output  # the logins come last, from `make run`
    bodies = " ".join(m.body for m in db.exec(select(OutboxMessage)))
    assert "http://127.0.0.1:8300/" in bodies and ":8000" not in bodies


@pytest.mark.parametrize(
    ("result", "worked"),
    [
        (None, False),
        (0, False),
        ({"opened": 0, "missed": 0}, False),
        ({"events": 3, "created": 0}, False),
        ({"opened": 1, "missed": 0}, True),
        ({"sent": {"sms": 2}}, True),
        (3, True),
    ],
)
def test_a_job_did_work(result, worked):
    assert scheduler.did_work(result) is worked


def test_a_tick_with_nothing_done_is_debug_and_work_is_info(app, caplog):
    idle = scheduler.JobSpec("test.idle", 60, lambda **_: {"opened": 0}, "nothing to do")
    busy = scheduler.JobSpec("test.busy", 60, lambda **_: {"opened": 2}, "something done")
    with caplog.at_level(logging.DEBUG, logger="stepdown.scheduler"):
        scheduler.run_job(app, idle)
        scheduler.run_job(app, busy)
    levels = {r.getMessage(): r.levelno for r in caplog.records if r.name == "stepdown.scheduler"}
    assert levels == {
        "job test.idle: {'opened': 0}": logging.DEBUG,
        "job test.busy: {'opened': 2}": logging.INFO,
    }


def test_apschedulers_per_run_lines_are_silenced(app):
    scheduler.build(app)
    assert logging.getLogger("apscheduler.executors.default").getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("apscheduler.scheduler").getEffectiveLevel() == logging.WARNING


def test_make_run_ends_with_the_urls_and_every_login(db, world):
    lines = login_lines(db)
    assert any(re.match(r"admin\.a@example\.test\s+admin, SITE-A$", line) for line in lines)
    assert any(re.match(r"nurse\.b@example\.test\s+nurse, SITE-B$", line) for line in lines)
    text = banner("http://127.0.0.1:8300", "http://127.0.0.1:8310", lines)
    assert "http://127.0.0.1:8300/login" in text and "http://127.0.0.1:8300/api/docs" in text
    assert "http://127.0.0.1:8310/_fake/" in text
    assert "password for all: stepdown-demo-2026" in text
    assert text.rstrip().endswith("─" * 78)  # the logins are the last thing printed
    assert text.index("Demo logins") > text.index("/_fake/")


def test_the_api_reference_has_a_table_of_contents_by_tag(client):
    html = client.get("/api/docs").get_data(as_text=True)
    toc = html[html.index('<nav class="card toc"') : html.index("</nav>", html.index("toc"))]
    tags = re.findall(r'<summary><a href="#(tag-[a-z0-9_-]+)">([^<]+)</a>', toc)
    assert len(tags) >= 8 and ("tag-participants", "participants") in tags
    for anchor, _name in tags:
        assert f'id="{anchor}"' in html
    linked = re.findall(r'<li><a href="#([a-z0-9_-]+)"><span class="method', toc)
    spec = client.get("/api/openapi.json").get_json()
    operations = sum(
        1
        for item in spec["paths"].values()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    )
    assert len(linked) == len(set(linked)) == operations
    for anchor in linked:
        assert f'<section class="card op" id="{anchor}">' in html


def test_favicon_ico_is_served_and_cached_like_a_static_file(client):
    resp = client.get("/favicon.ico")
    assert resp.status_code == 200
    assert resp.mimetype == "image/vnd.microsoft.icon"
    assert resp.data[:4] == b"\x00\x00\x01\x00"  # an ICO header
    assert "no-store" not in resp.headers.get("Cache-Control", "")


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ('127.0.0.1 - - [t] "\x1b[35m\x1b[1mPOST /twilio/status/23 HTTP/1.1\x1b[0m" 204 -', False),
        ('127.0.0.1 - - [t] "GET /healthz HTTP/1.1" 200 -', False),
        ('127.0.0.1 - - [t] "POST /twilio/status/23 HTTP/1.1" 403 -', True),  # a refusal shows
        ('127.0.0.1 - - [t] "GET /login HTTP/1.1" 200 -', True),
        ("job alerts.escalate: {'advanced': 1}", True),
    ],
)
def test_make_run_hides_only_routine_access_lines(line, shown):
    assert (ROUTINE.search(line) is None) is shown
