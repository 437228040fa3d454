"""Pure adherence arithmetic."""

from __future__ import annotations


def percentage(part: int, whole: int) -> float | None:
    """part / whole as a percentage rounded to 0.1, or None when nothing was due."""
    if whole <= 0:
        return None
    return round(100.0 * part / whole, 1)
