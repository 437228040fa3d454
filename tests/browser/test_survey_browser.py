"""The survey page in a real browser (Debian's Chromium driven by Playwright, no browser download)
at 390x844 (a phone) and 1280x800: open the link from the SMS, answer one tap per question, step
by step with progress, problems in the participant's language with the focus moved to them, then
the thank-you page; without JavaScript too. The QLQ-C30 shows the text a site loaded with
`stepdown instruments load-text` (a short made-up file: the EORTC wording is licensed); the
check-in shows its own wording in English, French and Chinese. Screenshots are kept in
test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from playwright.sync_api import Page, expect
from sqlmodel import select

from server.auth import service as auth_service
from server.auth.models import Role
from server.db import get_db
from server.participants import service as participants
from server.participants.models import Locale, ParticipantStatus
from server.protocols.models import Study
from server.schedules.models import EventStatus, ScheduleEvent
from server.surveys.service import survey_link
from tests.browser.harness import ARTIFACTS, DESKTOP, PHONE, chromium, no_sideways_scroll, serving

MADEUP_FR = (
    Path(__file__).resolve().parents[1] / "surveys" / "data" / "eortc_qlq_c30.madeup-fr.yaml"
)
SMALL_PHONE = {"width": 360, "height": 740}


def _page(browser: Any, size: dict[str, int], *, javascript: bool = True) -> Page:
    phone = size["width"] < 600
    context = browser.new_context(
        viewport=size,
        device_scale_factor=2 if phone else 1,
        is_mobile=phone,
        has_touch=phone,
        java_script_enabled=javascript,
    )
    return context.new_page()  # type: ignore[no-any-return]


@contextmanager
def _served(app: Any, people: list[tuple[str, Locale, str]]) -> Iterator[dict[str, str]]:
    """The app on a real port with one HEROES participant per (code, locale, instrument) whose
    first questionnaire (qol:1) is open now; yields each one's survey link."""
    now = datetime.now(UTC)  # the suite's frozen clock
    with serving(app):
        with app.app_context(), get_db(app).job_session() as s:
            site = auth_service.create_site(
                session=s,
                actor=None,
                code="WEB",
                name="Web",
                country="FR",
                timezone="Europe/Paris",
                now=now,
                failsafe_role="investigator",
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
                site_ids=[site.id],  # type: ignore[list-item]
                now=now,
            )
            links = {}
            for n, (code, locale, instrument) in enumerate(people):
                p = participants.enroll(
                    session=s,
                    user=coordinator,
                    study="HEROES",
                    site_id=site.id,  # type: ignore[arg-type]
                    study_code=code,
                    timezone="Europe/Paris",
                    cohort="stop",
                    # Anchor today: the first questionnaire (qol:1, day 0) is open now.
                    anchor_date=now.astimezone(ZoneInfo("Europe/Paris")).date(),
                    status=ParticipantStatus.OFF_TREATMENT_MONITORING,
                    locale=locale,
                    phone=f"+3361234{9000 + n}",
                    has_sms_consent=True,
                    # Past screening: the entry gate's baseline attested (issue 17).
                    eligibility={
                        "baseline_ctdna": {"value": "negative", "observed_on": now.date()}
                    },
                    now=now,
                )
                event = s.exec(
                    select(ScheduleEvent).where(
                        ScheduleEvent.participant_id == p.id, ScheduleEvent.key == "qol:1"
                    )
                ).one()
                event.instrument = instrument
                s.add(event)
                link = survey_link(p, event)
                assert link is not None
                links[code] = link
        yield links


def _fits(page: Page, width: int) -> None:
    """No sideways scrolling; every answer a full tap target (at least 48 px high)."""
    no_sideways_scroll(page, width)
    heights = page.eval_on_selector_all(
        "label.choice", "els => els.map(e => e.getBoundingClientRect().height)"
    )
    assert heights and min(heights) >= 48, heights


def _answer_step(page: Page) -> None:
    """One tap per question: the first answer of each."""
    for field in page.locator("fieldset.item").all():
        field.locator("label.choice").first.click()


def test_the_qlq_c30_with_a_loaded_text_step_by_step_on_a_phone_and_a_desktop(fresh_app):
    people = [
        ("WEB-01", Locale.FR, "eortc_qlq_c30"),
        ("WEB-02", Locale.FR, "eortc_qlq_c30"),
    ]
    loaded = fresh_app.test_cli_runner().invoke(
        args=["instruments", "load-text", "qlq-c30", "--locale", "fr", str(MADEUP_FR)]
    )
    assert loaded.exit_code == 0, loaded.output
    with _served(fresh_app, people) as links, chromium() as browser:
        page = _page(browser, PHONE)
        page.goto(links["WEB-01"])
        expect(page.locator("h1")).to_have_text("Questionnaire fictif de qualité de vie")
        expect(page.locator("#step-title")).to_have_text("Étape 1 sur 8")
        expect(page.locator("legend").first).to_have_text(
            "1. Question fictive 1 : marcher longtemps ?"
        )
        expect(page.locator(".intro")).to_have_text("Ceci est un texte inventé pour les tests.")
        _fits(page, PHONE["width"])
        page.screenshot(path=str(ARTIFACTS / "survey-qlq-c30-fr-step1-390.png"), full_page=True)

        # Next with nothing chosen: the problems, in French, announced and focused.
        page.get_by_role("button", name="Suivant").click()
        expect(page.locator("#error-summary")).to_contain_text(
            "Merci de répondre aux questions signalées ci-dessous."
        )
        assert page.locator("p.error").all_inner_texts() == ["Merci de choisir une réponse."] * 4
        expect(page.locator("#error-summary")).to_be_focused()
        _fits(page, PHONE["width"])
        page.screenshot(path=str(ARTIFACTS / "survey-qlq-c30-fr-errors-390.png"), full_page=True)
        # A problem's link puts the focus on its question's first answer.
        page.locator("#error-summary a").first.click()
        expect(page.locator("#q-q1-0")).to_be_focused()

        for step in range(1, 9):
            expect(page.locator("#step-title")).to_have_text(f"Étape {step} sur 8")
            if step > 1:  # the new step is announced: the focus is on its heading
                expect(page.locator("#step-title")).to_be_focused()
            if step == 3:  # the loaded heading starts the step of item 8
                expect(page.locator(".section-heading")).to_have_text(
                    "Ces derniers jours (titre fictif) :"
                )
                page.screenshot(
                    path=str(ARTIFACTS / "survey-qlq-c30-fr-step3-390.png"), full_page=True
                )
            _answer_step(page)
            if step < 8:
                page.get_by_role("button", name="Suivant").click()
        expect(page.locator("legend").last).to_have_text(
            "30. Question fictive 30 : votre qualité de vie ?"
        )
        _fits(page, PHONE["width"])
        page.screenshot(path=str(ARTIFACTS / "survey-qlq-c30-fr-last-390.png"), full_page=True)
        page.get_by_role("button", name="Envoyer mes réponses").click()
        expect(page.locator("h1")).to_have_text("Merci !")
        page.screenshot(path=str(ARTIFACTS / "survey-qlq-c30-fr-thanks-390.png"), full_page=True)

        # The same questionnaire at 1280x800.
        desk = _page(browser, DESKTOP)
        desk.goto(links["WEB-02"])
        expect(desk.locator("#step-title")).to_have_text("Étape 1 sur 8")
        _fits(desk, DESKTOP["width"])
        desk.screenshot(path=str(ARTIFACTS / "survey-qlq-c30-fr-step1-1280.png"), full_page=True)

        # Without JavaScript: plain forms, the same steps.
        bare = _page(browser, PHONE, javascript=False)
        bare.goto(links["WEB-02"])
        bare.get_by_role("button", name="Suivant").click()
        expect(bare.locator("p.error").first).to_have_text("Merci de choisir une réponse.")
        _answer_step(bare)
        bare.get_by_role("button", name="Suivant").click()
        expect(bare.locator("#step-title")).to_have_text("Étape 2 sur 8")
        bare.get_by_role("button", name="Retour").click()
        expect(bare.locator("#step-title")).to_have_text("Étape 1 sur 8")
        assert bare.locator("input:checked").count() == 4  # kept at each step
    with fresh_app.app_context(), get_db(fresh_app).job_session() as s:
        done = s.exec(select(ScheduleEvent).where(ScheduleEvent.key == "qol:1")).all()
        assert sorted(e.status for e in done) == [EventStatus.COMPLETED, EventStatus.OPEN]


CHECKIN = {
    Locale.EN: ("How are you today?", "1. Overall, how do you feel today?", "Step {n} of {t}"),
    Locale.FR: (
        "Comment allez-vous aujourd'hui ?",
        "1. Dans l'ensemble, comment vous sentez-vous aujourd'hui ?",
        "Étape {n} sur {t}",
    ),
    Locale.ZH: ("您今天感觉怎么样？", "1. 总的来说，您今天感觉如何？", "第 {n} 步，共 {t} 步"),
}


def test_the_check_in_in_english_french_and_chinese(fresh_app):
    people = [(f"CHK-{loc.value.upper()}", loc, "qol_checkin") for loc in CHECKIN]
    with _served(fresh_app, people) as links, chromium() as browser:
        for locale, (title, first, progress) in CHECKIN.items():
            page = _page(browser, PHONE)
            page.goto(links[f"CHK-{locale.value.upper()}"])
            expect(page.locator("h1")).to_have_text(title)
            expect(page.locator("legend").first).to_have_text(first)
            expect(page.locator("#step-title")).to_have_text(progress.format(n=1, t=3))
            _fits(page, PHONE["width"])
            name = f"survey-checkin-{locale.value}-390.png"
            page.screenshot(path=str(ARTIFACTS / name), full_page=True)
        # At 360 px too: no sideways scroll, the 0-10 scale in two columns of full-size targets,
        # and one tap chooses an answer.
        small = _page(browser, SMALL_PHONE)
        small.goto(links["CHK-FR"])
        _fits(small, SMALL_PHONE["width"])
        widths = small.eval_on_selector_all(
            "label.choice", "els => els.map(e => e.getBoundingClientRect().width)"
        )
        assert min(widths) >= 140, widths
        small.locator("label.choice", has_text="10 – Très bien").tap()
        expect(small.locator("#q-wellbeing-10")).to_be_checked()
        small.screenshot(path=str(ARTIFACTS / "survey-checkin-fr-360.png"), full_page=True)
        # The Chinese participant answers it all; a fever adds the chills question (step 4).
        page.locator("label.choice", has_text="7").first.click()
        page.get_by_role("button", name="下一步").click()
        _answer_step(page)
        page.screenshot(path=str(ARTIFACTS / "survey-checkin-zh-step2-390.png"), full_page=True)
        page.get_by_role("button", name="下一步").click()
        page.locator("#field-new_lump label.choice", has_text="否").click()
        page.locator("#field-fever label.choice", has_text="是").click()
        page.get_by_role("button", name="下一步").click()
        expect(page.locator("#step-title")).to_have_text("第 4 步，共 4 步")
        expect(page.locator("legend")).to_have_text("8. 发烧时，您是否还有发冷或寒战？")
        page.screenshot(path=str(ARTIFACTS / "survey-checkin-zh-step4-390.png"), full_page=True)
        _answer_step(page)
        page.get_by_role("button", name="提交我的回答").click()
        expect(page.locator("h1")).to_have_text("谢谢！")

        desk = _page(browser, DESKTOP)
        desk.goto(links["CHK-EN"])
        _fits(desk, DESKTOP["width"])
        desk.get_by_role("button", name="Next").click()
        expect(desk.locator("#error-summary")).to_contain_text(
            "Question 1: Please choose an answer."
        )
        desk.screenshot(path=str(ARTIFACTS / "survey-checkin-en-errors-1280.png"), full_page=True)


def test_today_says_which_questionnaires_wait_for_their_text(fresh_app):
    """No QLQ-C30 text is loaded: the coordinator's Today lists the waiting questionnaires, the
    language and the command to run, readable on a phone and a laptop."""
    people = [("WAIT-EN", Locale.EN, "eortc_qlq_c30"), ("WAIT-FR", Locale.FR, "eortc_qlq_c30")]
    with _served(fresh_app, people) as links, chromium() as browser:
        base = links["WAIT-EN"].split("/s/")[0]
        for name, size in (("390", PHONE), ("1280", DESKTOP)):
            page = _page(browser, size)
            page.goto(f"{base}/login")
            page.get_by_label("Email").fill("c@web.test")
            page.get_by_label("Password").fill("x" * 12)
            page.get_by_role("button", name="Log in").click()
            section = page.locator("#questionnaire-texts")
            expect(section).to_contain_text("Questionnaires waiting for their text")
            expect(section.locator("li[data-locale=en]")).to_contain_text(
                "EORTC QLQ-C30 (version 3.0) in English: no English text loaded. "
                "1 questionnaire waiting (WAIT-EN)"
            )
            expect(section.locator("li[data-locale=fr]")).to_contain_text(
                "stepdown instruments load-text eortc_qlq_c30 --locale fr FILE"
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
            right = page.evaluate(
                "Math.max(...[...document.querySelectorAll('#questionnaire-texts *')]"
                ".map(e => e.getBoundingClientRect().right))"
            )
            assert right <= size["width"], right
            section.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / f"today-waiting-texts-{name}.png"))
            # The participant's link says, in her language, that it is not ready yet.
            page.goto(links["WAIT-FR"])
            expect(page.locator("h1")).to_have_text("Ce questionnaire n'est pas encore prêt.")
            if name == "390":
                page.screenshot(path=str(ARTIFACTS / "survey-not-ready-fr-390.png"))
