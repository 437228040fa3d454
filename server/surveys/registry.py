"""The installed instruments (config/instruments/*.yaml), loaded once when the app starts."""

from __future__ import annotations

import functools
from typing import Any

from flask import current_app, has_app_context

from config.settings import INSTRUMENTS_DIR
from server.surveys.definition import Instrument, load_all


def init_app(app: Any) -> None:
    """Load every instrument file; a bad one stops the app with file and field named."""
    app.extensions["instruments"] = load_all(app.config["INSTRUMENTS_DIR"])


@functools.cache
def _default() -> dict[str, Instrument]:
    return load_all(INSTRUMENTS_DIR)


def instruments() -> dict[str, Instrument]:
    """The instruments, by key."""
    if has_app_context() and "instruments" in current_app.extensions:
        return current_app.extensions["instruments"]  # type: ignore[no-any-return]
    return _default()
