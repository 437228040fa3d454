"""Fixtures of the schedule tests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlmodel import Session

from tests import factories

# Before every calendar the reminder stories travel to (they start in December 2026).
TEXTS_LOADED_AT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture
def texts_loaded_before_the_stories(db: Session, world: factories.World) -> None:
    """The site loaded its questionnaire texts long before the stories' dates: the world loads
    them at the suite's clock, which CI moves into 2028, and a reminder never goes before its
    questionnaire's text was there (server.surveys.texts.availability)."""
    from server.surveys.models import InstrumentText

    db.execute(sa.update(InstrumentText).values(loaded_at=TEXTS_LOADED_AT))
    db.commit()
