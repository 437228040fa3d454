"""Answer rules: branching, validation, EORTC scoring (hand-computed values), critical answers."""

from __future__ import annotations

import textwrap

import pytest

from config.settings import INSTRUMENTS_DIR
from server.surveys.definition import Instrument, Severity, load_instrument, parse_instrument
from server.surveys.rules import (
    ScaleScore,
    critical_answers,
    score,
    validate_answers,
    visible_items,
)


@pytest.fixture(scope="module")
def c30() -> Instrument:
    return load_instrument(INSTRUMENTS_DIR / "eortc_qlq_c30.yaml")


@pytest.fixture(scope="module")
def checkin() -> Instrument:
    return load_instrument(INSTRUMENTS_DIR / "qol_checkin.yaml")


def _q(**answers: int) -> dict[str, object]:
    return dict(answers)


# -- EORTC QLQ-C30 scoring (expected values worked out by hand from the scoring manual) ----------


def test_physical_functioning_all_answered(c30: Instrument) -> None:
    # RS = (1+2+1+3+2)/5 = 1.8; S = (1 - 0.8/3) x 100 = 73.33
    pf2 = score(c30, _q(q1=1, q2=2, q3=1, q4=3, q5=2))["PF2"]
    assert pf2.raw == pytest.approx(1.8)
    assert pf2.score == pytest.approx(73.33, abs=0.005)
    assert (pf2.answered, pf2.total, pf2.is_missing) == (5, 5, False)


def test_fatigue_symptom_scale(c30: Instrument) -> None:
    # RS = (2+3+2)/3 = 2.333; S = (1.333/3) x 100 = 44.44
    fa = score(c30, _q(q10=2, q12=3, q18=2))["FA"]
    assert fa.raw == pytest.approx(2.3333, abs=0.0001)
    assert fa.score == pytest.approx(44.44, abs=0.005)


def test_global_health_status(c30: Instrument) -> None:
    # RS = (5+6)/2 = 5.5; S = (4.5/6) x 100 = 75.0
    ql2 = score(c30, _q(q29=5, q30=6))["QL2"]
    assert ql2.raw == pytest.approx(5.5)
    assert ql2.score == pytest.approx(75.0)


def test_global_health_extremes(c30: Instrument) -> None:
    assert score(c30, _q(q29=1, q30=1))["QL2"].score == pytest.approx(0.0)
    assert score(c30, _q(q29=7, q30=7))["QL2"].score == pytest.approx(100.0)


def test_functional_and_symptom_extremes(c30: Instrument) -> None:
    best = score(c30, _q(q6=1, q7=1, q9=1, q19=1))
    worst = score(c30, _q(q6=4, q7=4, q9=4, q19=4))
    assert best["RF2"].score == pytest.approx(100.0)  # no limitation = full functioning
    assert best["PA"].score == pytest.approx(0.0)  # no pain
    assert worst["RF2"].score == pytest.approx(0.0)
    assert worst["PA"].score == pytest.approx(100.0)


def test_other_scales_by_hand(c30: Instrument) -> None:
    result = score(
        c30, _q(q21=2, q22=2, q23=3, q24=3, q20=1, q25=2, q8=3, q14=1, q15=1, q26=4, q27=4)
    )
    assert result["EF"].score == pytest.approx(50.0)  # RS 2.5 -> (1 - 1.5/3) x 100
    assert result["CF"].score == pytest.approx(83.33, abs=0.005)  # RS 1.5 -> (1 - 0.5/3) x 100
    assert result["DY"].score == pytest.approx(66.67, abs=0.005)  # single item 3 -> (2/3) x 100
    assert result["NV"].score == pytest.approx(0.0)  # RS 1
    assert result["SF"].score == pytest.approx(0.0)  # RS 4 -> (1 - 3/3) x 100


def test_scale_scored_on_the_answered_items(c30: Instrument) -> None:
    # PF2 with 3 of 5 answered: RS = (2+2+3)/3 = 2.333; S = (1 - 1.333/3) x 100 = 55.56
    pf2 = score(c30, _q(q1=2, q2=2, q3=3))["PF2"]
    assert (pf2.answered, pf2.total, pf2.is_missing) == (3, 5, False)
    assert pf2.raw == pytest.approx(2.3333, abs=0.0001)
    assert pf2.score == pytest.approx(55.56, abs=0.005)


def test_exactly_half_answered_is_enough(c30: Instrument) -> None:
    # RF2 with 1 of 2 answered (q6 = 4): RS = 4; S = (1 - 3/3) x 100 = 0
    rf2 = score(c30, _q(q6=4))["RF2"]
    assert rf2 == ScaleScore(raw=4.0, score=0.0, answered=1, total=2, is_missing=False)


def test_below_half_answered_is_missing(c30: Instrument) -> None:
    result = score(c30, _q(q10=3))
    assert result["RF2"] == ScaleScore(None, None, answered=0, total=2, is_missing=True)
    # FA with 1 of 3 answered: 1/3 < 1/2 -> missing
    assert result["FA"] == ScaleScore(None, None, answered=1, total=3, is_missing=True)
    assert result["DY"].is_missing


def test_every_scale_is_reported(c30: Instrument) -> None:
    keys = {"QL2", "PF2", "RF2", "EF", "CF", "SF", "FA", "NV", "PA"}
    keys |= {"DY", "SL", "AP", "CO", "DI", "FI"}
    assert set(score(c30, {})) == keys


def test_score_refuses_invalid_answers(c30: Instrument) -> None:
    with pytest.raises(ValueError, match="q1: 5 is not allowed"):
        score(c30, _q(q1=5))
    with pytest.raises(ValueError, match="q31: unknown item"):
        score(c30, _q(q31=1))


# -- the check-in ------------------------------------------------------------------------------


def test_checkin_scores(checkin: Instrument) -> None:
    # symptom burden: mean of 2, 1, 0, 3 = 1.5 (a `mean` scale reports the mean itself)
    # wellbeing: 7 on 0..10 -> (7/10) x 100 = 70
    result = score(checkin, _q(wellbeing=7, fatigue=2, pain=1, breathlessness=0, appetite_loss=3))
    assert result["symptom_burden"] == ScaleScore(1.5, 1.5, 4, 4, is_missing=False)
    assert result["wellbeing"].score == pytest.approx(70.0)


def test_checkin_symptom_burden_needs_half(checkin: Instrument) -> None:
    assert score(checkin, _q(fatigue=3))["symptom_burden"].is_missing  # 1 of 4
    two = score(checkin, _q(fatigue=3, pain=0))["symptom_burden"]  # 2 of 4: (3+0)/2
    assert (two.raw, two.is_missing) == (1.5, False)


# -- branching ---------------------------------------------------------------------------------


def test_chills_hidden_unless_fever(checkin: Instrument) -> None:
    base = [
        "wellbeing",
        "fatigue",
        "pain",
        "breathlessness",
        "appetite_loss",
        "new_lump",
        "fever",
    ]
    assert visible_items(checkin, {}) == base
    assert visible_items(checkin, _q(fever=0)) == base
    assert visible_items(checkin, _q(fever=1)) == [*base, "chills"]


def test_answering_a_hidden_item_is_an_error(checkin: Instrument) -> None:
    problems = validate_answers(checkin, _q(fever=0, chills=1), partial=True)
    assert problems == {"chills": "not shown (asked only when 'fever' is answered 1)"}
    assert validate_answers(checkin, _q(fever=1, chills=1), partial=True) == {}


def test_branching_chains_through_hidden_items() -> None:
    text = textwrap.dedent(
        """\
        key: chain
        version: 1
        title: {en: Chain, fr: Chaîne, zh: 链}
        responses:
          yes_no:
            options:
              - {value: 1, label: {en: "Yes", fr: Oui, zh: 是}}
              - {value: 0, label: {en: "No", fr: Non, zh: 否}}
        items:
          - {id: a, number: 1, text: {en: A, fr: A, zh: A}, responses: yes_no}
          - id: b
            number: 2
            text: {en: B, fr: B, zh: B}
            responses: yes_no
            show_if: {item: a, in: [1]}
          - id: c
            number: 3
            text: {en: C, fr: C, zh: C}
            responses: yes_no
            show_if: {item: b, in: [1]}
        """
    )
    chain = parse_instrument(text, file="chain.yaml")
    # b's stale answer does not show c once a hides b
    assert visible_items(chain, _q(a=0, b=1)) == ["a"]
    assert visible_items(chain, _q(a=1, b=1)) == ["a", "b", "c"]


# -- validation --------------------------------------------------------------------------------


def test_validation_problems(checkin: Instrument) -> None:
    problems = validate_answers(
        checkin,
        {"wellbeing": 11, "fatigue": 4, "pain": True, "breathlessness": "2", "mood": 1},
        partial=True,
    )
    assert problems == {
        "wellbeing": "11 is not allowed (must be between 0 and 10)",
        "fatigue": "4 is not allowed (must be one of 0, 1, 2, 3)",
        "pain": "must be a whole number",
        "breathlessness": "must be a whole number",
        "mood": "unknown item",
    }


def test_required_only_when_complete(checkin: Instrument) -> None:
    answers = _q(wellbeing=5, fatigue=1, pain=0, breathlessness=0, appetite_loss=0, new_lump=0)
    assert validate_answers(checkin, answers, partial=True) == {}
    assert validate_answers(checkin, answers, partial=False) == {"fever": "required"}
    # fever yes makes the chills question shown, hence required
    answers_fever = {**answers, "fever": 1}
    assert validate_answers(checkin, answers_fever, partial=False) == {"chills": "required"}
    assert validate_answers(checkin, {**answers, "fever": 0}, partial=False) == {}
    # None counts as unanswered
    assert validate_answers(checkin, {**answers, "fever": None}, partial=False) == {
        "fever": "required"
    }


# -- critical answers --------------------------------------------------------------------------


def test_critical_answers(checkin: Instrument) -> None:
    assert critical_answers(checkin, _q(new_lump=0, fever=0)) == []
    assert critical_answers(checkin, _q(new_lump=1, fever=0)) == [("new_lump", Severity.HIGH)]
    assert critical_answers(checkin, _q(new_lump=1, fever=1, chills=1)) == [
        ("new_lump", Severity.HIGH),
        ("fever", Severity.HIGH),
    ]
    assert critical_answers(checkin, _q(pain=3, wellbeing=0)) == []


def test_critical_threshold() -> None:
    text = textwrap.dedent(
        """\
        key: pain
        version: 1
        title: {en: Pain, fr: Douleur, zh: 疼痛}
        responses:
          nrs: {min: 0, max: 10}
        items:
          - id: worst_pain
            number: 1
            text: {en: Worst pain, fr: Pire douleur, zh: 最痛}
            responses: nrs
            critical_if: {at_least: 8, severity: critical}
        """
    )
    pain = parse_instrument(text, file="pain.yaml")
    assert critical_answers(pain, _q(worst_pain=7)) == []
    assert critical_answers(pain, _q(worst_pain=8)) == [("worst_pain", Severity.CRITICAL)]
    assert critical_answers(pain, _q(worst_pain=10)) == [("worst_pain", Severity.CRITICAL)]
    # an invalid answer is never critical (validate_answers reports it)
    assert critical_answers(pain, _q(worst_pain=11)) == []
