"""Factories: build the objects tests need through the real services."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import time_machine
from sqlmodel import Session

from server.auth import service as auth_service
from server.auth.models import Role, StaffUser
from server.clock import utcnow
from server.participants import service as participant_service
from server.participants.models import Locale, Participant, ParticipantStatus, Site
from server.protocols.models import Study

PASSWORD = "correct horse battery staple"


@dataclass
class World:
    sites: dict[str, Site] = field(default_factory=dict)
    study: Study | None = None
    staff: dict[tuple[str, str], StaffUser] = field(default_factory=dict)
    participants: dict[str, Participant] = field(default_factory=dict)


def make_site(db: Session, code: str, country: str = "FR", tz: str = "Europe/Paris") -> Site:
    return auth_service.create_site(
        session=db,
        actor=None,
        code=code,
        name=f"Site {code}",
        country=country,
        timezone=tz,
        now=utcnow(),
        failsafe_role="investigator",
    )


def make_study(db: Session, key: str = "HEROES", protocol_key: str = "heroes") -> Study:
    study = Study(key=key, title=f"{key} study", protocol_key=protocol_key, created_at=utcnow())
    db.add(study)
    db.flush()
    return study


def make_user(
    db: Session, email: str, role: Role, sites: list[Site], phone: str | None = None
) -> StaffUser:
    return auth_service.create_user(
        session=db,
        actor=None,
        email=email,
        full_name=email.split("@")[0],
        password=PASSWORD,
        role=role,
        site_ids=[s.id for s in sites],
        phone_e164=phone,  # type: ignore[misc]
        is_phone_verified=phone is not None,
        now=utcnow(),
    )


def make_participant(
    db: Session, user: StaffUser, site: Site, study: Study, code: str, **kw: object
) -> Participant:
    params: dict[str, object] = {
        "timezone": None,
        "cohort": "stop",
        # Fixed, not relative to the clock: tests check this calendar (DST, weekdays) exactly.
        "anchor_date": date(2027, 1, 4),
        "status": ParticipantStatus.OFF_TREATMENT_MONITORING,
        "locale": Locale.FR,
        "phone": None,
        "has_sms_consent": False,
    }
    params.update(kw)
    if "eligibility" not in params:
        params["eligibility"] = passed_gate(study, params)
    return participant_service.enroll(
        session=db,
        user=user,
        study=study.key,
        site_id=site.id,
        study_code=code,  # type: ignore[arg-type]
        now=utcnow(),
        **params,  # type: ignore[arg-type]
    )


def passed_gate(study: Study, params: dict[str, object]) -> dict[str, object] | None:
    """Past screening in a gated protocol, every gate fact attested as passing (as for a
    participant whose entry gate was passed before Stepdown); else nothing."""
    from server.protocols.service import find_protocol
    from server.schedules.service import PLANNING_STATUSES

    gate = find_protocol(study.protocol_key).entry_gate
    if gate is None or params.get("status") not in PLANNING_STATUSES:
        return None
    held = min(params["anchor_date"], utcnow().date())  # type: ignore[type-var]
    return {f.key: {"value": f.passes[0], "observed_on": held} for f in gate.facts}


# When the world's calendar (anchor 2027-01-04, baseline draw window from 2026-12-07) has its
# participants enrolled: a few days before their first window opens.
SCENARIO_ENROLLED_AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def a1_in_scenario(
    db: Session, world: World, code: str = "A-901", phone: str = "+33612340901", **kw: object
) -> Participant:
    """Like the world's A1 (HEROES stop, anchor 2027-01-04, Paris, French, SMS consent), enrolled at
    SCENARIO_ENROLLED_AT whatever tests.clock.NOW is: for tests that check that calendar exactly
    (DST, windows, reminders on given days) and travel to its dates."""
    with time_machine.travel(SCENARIO_ENROLLED_AT, tick=False):
        participant = make_participant(
            db,
            world.staff[("coordinator", "A")],
            world.sites["A"],
            world.study,  # type: ignore[arg-type]
            code,
            **{"phone": phone, "has_sms_consent": True, **kw},  # type: ignore[arg-type]
        )
        db.commit()
    return participant


def token_for(db: Session, user: StaffUser) -> str:
    # Long-lived: tests travel in time (months ahead) with the same token.
    token, _ = auth_service.issue_token(session=db, user=user, ttl_hours=24 * 365 * 5, now=utcnow())
    db.commit()
    return token


LANGUAGE_WORD = {"en": "Made-up question", "fr": "Question inventée", "zh": "虚构问题"}
MADEUP_TITLE = {"en": "Made-up questionnaire", "fr": "Questionnaire inventé", "zh": "虚构问卷"}


def madeup_text(key: str, locale: str) -> str:
    """A made-up text file for an installed instrument (NOT any licensed wording): every item
    "Made-up question 12 ...", every answer "Made-up answer 3", a heading before the 8th item."""
    import yaml

    from server.surveys.registry import instruments

    instrument = instruments()[key]
    word = LANGUAGE_WORD[locale]
    data = {
        "instrument": key,
        "version": str(instrument.version),
        "locale": locale,
        "source": "made up for the tests",
        "title": MADEUP_TITLE[locale],
        "headings": {instrument.items[min(7, len(instrument.items) - 1)].id: f"{word}: heading"},
        "items": {item.id: f"{word} {item.number} ({locale})" for item in instrument.items},
        "responses": {
            name: {value: f"{word} answer {value}" for value in answers.values}
            if answers.options is not None
            else {answers.lowest: f"{word} low", answers.highest: f"{word} high"}
            for name, answers in instrument.responses.items()
            if any(item.responses == name for item in instrument.items)
        },
    }
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


def load_madeup_texts(
    db: Session, key: str = "eortc_qlq_c30", locales: tuple[str, ...] = ("en", "fr", "zh")
) -> None:
    """The site has loaded a (made-up) text for a licensed instrument in these languages, so its
    questionnaires can be sent (as a site running HEROES does with its licensed QLQ-C30). Loaded
    before any participant's enrolment, whatever tests.clock.NOW is (a questionnaire's reminders
    planned before its text came are not owed), so the scenario's calendar holds at any clock."""
    from server.surveys import texts
    from server.surveys.registry import instruments

    loaded_at = min(utcnow(), SCENARIO_ENROLLED_AT) - timedelta(days=1)
    for locale in locales:
        texts.load_text(
            session=db,
            instrument=instruments()[key],
            locale=locale,
            raw=madeup_text(key, locale).encode(),
            source_file=f"{key}.madeup-{locale}.yaml",
            actor="test",
            now=loaded_at,
        )


def build_world(db: Session, *, with_texts: bool = True) -> World:
    """Two sites, HEROES, staff of every role, three participants; the QLQ-C30 (HEROES' QoL
    instrument) has a made-up text in every language, as a site would have loaded its own
    (`with_texts=False`: none, so its questionnaires wait)."""
    w = World()
    if with_texts:
        load_madeup_texts(db)
    w.sites["A"] = make_site(db, "SITE-A", "FR", "Europe/Paris")
    w.sites["B"] = make_site(db, "SITE-B", "US", "America/New_York")
    w.study = make_study(db)
    for site_key, site in w.sites.items():
        for role in Role:
            w.staff[(role.value, site_key)] = make_user(
                db, f"{role.value}.{site_key.lower()}@example.test", role, [site]
            )
    w.participants["A1"] = make_participant(
        db,
        w.staff[("coordinator", "A")],
        w.sites["A"],
        w.study,
        "A-001",
        phone="+33612345678",
        has_sms_consent=True,
    )
    w.participants["A2"] = make_participant(
        db, w.staff[("coordinator", "A")], w.sites["A"], w.study, "A-002"
    )
    w.participants["B1"] = make_participant(
        db,
        w.staff[("coordinator", "B")],
        w.sites["B"],
        w.study,
        "B-001",
        locale=Locale.EN,
        phone="+16175550123",
    )
    db.commit()
    return w
