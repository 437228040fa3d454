"""The one clock. Everything asks it for the time so tests can freeze it (time-machine)."""

from __future__ import annotations

from notifications.sqltypes import utcnow

__all__ = ["utcnow"]
