"""A real browser (Debian's Chromium, driven by Playwright, no browser download) on a phone-sized
screen: open the link from the SMS, answer, send, see the thank-you page. Screenshots are kept in
test-artifacts/."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import sync_playwright
from sqlmodel import select
from werkzeug.serving import make_server

from server.auth import service as auth_service
from server.auth.models import Role
from server.db import get_db
from server.participants import service as participants
from server.participants.models import Locale, ParticipantStatus
from server.protocols.models import Study
from server.schedules.models import EventStatus, ScheduleEvent
from server.surveys.service import survey_link
from tests.results.test_concurrency import fresh_app

__all__ = ["fresh_app"]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium_path() -> str:
    for candidate in (
        os.environ.get("CHROMIUM_PATH"),
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).exists():
            return candidate
    raise AssertionError("Debian's chromium is not installed: `make test` installs it")


def test_answer_the_questionnaire_from_the_sms_link_on_a_phone(fresh_app):
    now = datetime.now(UTC)
    with fresh_app.app_context(), get_db(fresh_app).job_session() as s:
        site = auth_service.create_site(
            session=s,
            actor=None,
            code="WEB",
            name="Web",
            country="FR",
            timezone="Europe/Paris",
            now=now,
        )
        s.add(Study(key="HEROES", title="HEROES", protocol_key="heroes", created_at=now))
        s.flush()
        coordinator = auth_service.create_user(
            session=s,
            actor=None,
            email="c@web.test",
            full_name="C",
            password="x" * 12,
            role=Role.COORDINATOR,
            site_ids=[site.id],
            now=now,
        )  # type: ignore[list-item]
        # Anchor today: the first questionnaire (qol:1) is open now.
        p = participants.enroll(
            session=s,
            user=coordinator,
            study="HEROES",
            site_id=site.id,
            study_code="WEB-01",  # type: ignore[arg-type]
            timezone="Europe/Paris",
            cohort="stop",
            anchor_date=(now + timedelta(hours=2)).date(),
            status=ParticipantStatus.OFF_TREATMENT_MONITORING,
            locale=Locale.EN,
            phone="+33612349999",
            has_sms_consent=True,
            now=now,
        )
        event = s.exec(
            select(ScheduleEvent).where(
                ScheduleEvent.participant_id == p.id, ScheduleEvent.key == "qol:1"
            )
        ).one()
        event_id = event.id
        server = make_server("127.0.0.1", 0, fresh_app, threaded=True)
        fresh_app.config["PUBLIC_BASE_URL"] = f"http://127.0.0.1:{server.server_port}"
        link = survey_link(p, event)
    assert link is not None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=chromium_path(),
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(
                viewport={"width": 360, "height": 740},
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
            )
            page.goto(link)
            assert page.locator("h1").inner_text()
            # Nothing wider than the phone: no horizontal scrolling.
            assert page.evaluate("document.documentElement.scrollWidth") <= 360
            page.screenshot(path=str(ARTIFACTS / "survey-form-360.png"), full_page=True)
            for field in page.locator("fieldset.item").all():
                if field.is_visible():
                    field.locator("label.choice").first.click()
            page.get_by_role("button", name="Send my answers").click()
            page.wait_for_load_state()
            assert "Thank you!" in page.locator("h1").inner_text()
            page.screenshot(path=str(ARTIFACTS / "survey-thank-you-360.png"), full_page=True)
            browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=5)
    with fresh_app.app_context(), get_db(fresh_app).job_session() as s:
        assert s.get(ScheduleEvent, event_id).status == EventStatus.COMPLETED
    assert (ARTIFACTS / "survey-thank-you-360.png").stat().st_size > 1000
