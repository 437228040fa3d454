"""Run Alembic programmatically (CLI, tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

INI = Path(__file__).resolve().parent.parent / "migrations" / "alembic.ini"


def alembic_config(database_url: str) -> Config:
    """Alembic config bound to a database URL."""
    cfg = Config(str(INI))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema up to a revision."""
    command.upgrade(alembic_config(database_url), revision)


def check(database_url: str) -> None:
    """Raise if the models and the migrations disagree."""
    command.check(alembic_config(database_url))


def heads() -> list[str]:
    """The migration heads (there must be exactly one)."""
    return list(ScriptDirectory.from_config(Config(str(INI))).get_heads())
