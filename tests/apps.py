"""Extra apps for tests that need other settings (production headers, trusted proxies, Redis,
limits off) while sharing the running test's transaction, like the `app` fixture's requests."""

from __future__ import annotations

from typing import Any

from flask import Flask

from config import settings
from server.app import create_app
from server.db import get_db


def app_like(app: Flask, database_url: str, config: Any = None, **overrides: Any) -> Flask:
    """A new app (TestingConfig, or `config`, with `overrides`) whose requests join the current
    test's transaction (call it inside a test using the `db` fixture)."""
    config = config or settings.TestingConfig()
    config.DATABASE_URL = database_url
    for name, value in overrides.items():
        setattr(config, name, value)
    other = create_app(config)
    shared, own = get_db(app), get_db(other)
    own.engine.dispose()
    own.bind = shared.bind
    own.join_savepoint = True
    return other
