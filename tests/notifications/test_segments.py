"""Segment counting against the GSM 03.38 tables and the carriers' 160/153 and 70/67 rules."""

from __future__ import annotations

import pytest

from notifications.segments import (
    GSM7_BASIC,
    GSM7_EXTENDED,
    SegmentInfo,
    count_segments,
    is_gsm7,
    non_gsm7_chars,
)


def test_hello_is_one_gsm_segment() -> None:
    assert count_segments("Hello") == SegmentInfo("GSM-7", 5, 1)


def test_empty_text_needs_no_segment() -> None:
    assert count_segments("") == SegmentInfo("GSM-7", 0, 0)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)],
)
def test_gsm_single_160_then_153_per_part(length: int, segments: int) -> None:
    info = count_segments("a" * length)
    assert info == SegmentInfo("GSM-7", length, segments)


def test_extension_characters_cost_two_septets() -> None:
    for ch in "€[]{}^~\\|":
        assert count_segments(ch) == SegmentInfo("GSM-7", 2, 1), ch
    # 159 plain + one euro = 161 septets: no longer fits a single segment.
    assert count_segments("a" * 158 + "€") == SegmentInfo("GSM-7", 160, 1)
    assert count_segments("a" * 159 + "€") == SegmentInfo("GSM-7", 161, 2)


def test_extension_character_is_not_split_across_parts() -> None:
    # 152 septets, then a 2-septet '€' that would straddle the 153 boundary: it moves whole to
    # part 2, so 152 + 2 + 152 = 306 septets needs 3 parts, not the 2 that 306/153 suggests.
    text = "a" * 152 + "€" + "a" * 152
    assert count_segments(text) == SegmentInfo("GSM-7", 306, 3)
    # The same septet count with the euro elsewhere packs into 2.
    assert count_segments("€" + "a" * 304).segments == 2


@pytest.mark.parametrize("ch", list("éèùìòÇØøÅåÄÖÑÜ§¿äöñüàÉÆæß"))
def test_gsm_0338_accented_letters_are_gsm7(ch: str) -> None:
    assert ch in GSM7_BASIC
    assert count_segments(f"Rappel {ch}") == SegmentInfo("GSM-7", 8, 1)


@pytest.mark.parametrize("ch", list("êâîôûçÀÈÊ"))
def test_other_accents_force_ucs2(ch: str) -> None:
    assert ch not in GSM7_BASIC and ch not in GSM7_EXTENDED
    assert count_segments(f"Rappel {ch}").encoding == "UCS-2"
    assert non_gsm7_chars(f"Rappel {ch}{ch}") == [ch]


def test_french_reminder_with_only_gsm_accents() -> None:
    text = "Votre prochaine étape: prise de sang à 9h. Répondez OK."
    assert is_gsm7(text)
    assert count_segments(text) == SegmentInfo("GSM-7", len(text), 1)
    # One 'ê' turns the whole message into UCS-2.
    assert count_segments(text + " Prêt?").encoding == "UCS-2"


def test_newline_and_carriage_return_are_gsm7() -> None:
    assert count_segments("a\nb\rc") == SegmentInfo("GSM-7", 5, 1)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(70, 1), (71, 2), (134, 2), (135, 3)],
)
def test_chinese_is_ucs2_70_then_67(length: int, segments: int) -> None:
    text = ("您好请回复" * 40)[:length]
    assert count_segments(text) == SegmentInfo("UCS-2", length, segments)


def test_emoji_counts_two_utf16_units() -> None:
    assert count_segments("😀") == SegmentInfo("UCS-2", 2, 1)
    assert count_segments("OK 👍") == SegmentInfo("UCS-2", 5, 1)
    # 68 units + one emoji = 70 units: still one segment; one more char and it is two.
    assert count_segments("a" * 68 + "😀").segments == 1
    assert count_segments("a" * 69 + "😀") == SegmentInfo("UCS-2", 71, 2)


def test_emoji_is_not_split_mid_surrogate() -> None:
    # 66 units then an emoji at the 67-unit boundary: the pair moves whole, so 66 + 2 + 66 = 134
    # units needs 3 parts although 134 / 67 = 2.
    text = "中" * 66 + "😀" + "中" * 66
    assert count_segments(text) == SegmentInfo("UCS-2", 134, 3)
    assert count_segments("😀" + "中" * 132).segments == 2


def test_tables_have_the_standard_sizes() -> None:
    # 128 code points in the default table minus the escape; 10 in the extension table.
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENDED) == 10
    assert not GSM7_BASIC & GSM7_EXTENDED
