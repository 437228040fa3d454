"""SMS segment counting: GSM-7 (3GPP TS 23.038 / GSM 03.38) or UCS-2, as carriers bill it.

A message that fits one segment may use the full 160 septets (GSM-7) or 70 UTF-16 units (UCS-2).
Longer messages are split into concatenated parts whose user-data header eats 7 septets /
3 units, leaving 153 / 67 per part. A character is never split across parts: an extension
character (escape + char, 2 septets) or a surrogate pair (an emoji, 2 units) that would straddle
a boundary moves whole to the next part, so the count is a greedy packing, not a division.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# The default alphabet, in table order (0x00-0x7F). 0x1B is the escape to the extension table, so
# it is not a character a text can contain and is left out.
GSM7_BASIC: frozenset[str] = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs the escape septet plus itself.
GSM7_EXTENDED: frozenset[str] = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE = 160
GSM7_MULTI = 153
UCS2_SINGLE = 70
UCS2_MULTI = 67


@dataclass(frozen=True)
class SegmentInfo:
    """How a text goes over the air: its encoding, size in encoding units, and part count."""

    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def is_gsm7(text: str) -> bool:
    """True when every character of the text is in the GSM-7 default or extension table."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENDED for ch in text)


def non_gsm7_chars(text: str) -> list[str]:
    """The distinct characters that force the text into UCS-2, in order of first appearance."""
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in GSM7_BASIC and ch not in GSM7_EXTENDED:
            seen.setdefault(ch, None)
    return list(seen)


def _pack(costs: list[int], single: int, multi: int) -> int:
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            parts += 1
            used = 0
        used += cost
    return parts


def count_segments(text: str) -> SegmentInfo:
    """Count the encoding units and SMS segments the text needs (an empty text needs 0)."""
    if is_gsm7(text):
        costs = [2 if ch in GSM7_EXTENDED else 1 for ch in text]
        return SegmentInfo("GSM-7", sum(costs), _pack(costs, GSM7_SINGLE, GSM7_MULTI))
    # Python strings hold code points; UCS-2 on the air is UTF-16, where anything beyond the BMP
    # (most emoji) is a surrogate pair of 2 units.
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return SegmentInfo("UCS-2", sum(costs), _pack(costs, UCS2_SINGLE, UCS2_MULTI))
