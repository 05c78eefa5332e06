"""The structured feedback metric on hand-made generated answers with known errors."""
from __future__ import annotations

import pytest

from skillgpt.eval.flaws import (
    feedback_turns, flaw_phrases, flaw_record, flaw_stats, flaw_types, majority_mix, majority_mix_stats,
    parse_flaws, true_flaws,
)
from skillgpt.eval.summary import add_feedback_metrics

GYM, BALL = "gymnastics_swing", "basketball_dribble"


def sample(scenario: str, *types: str, sid: str = "s") -> dict:
    return {"id": sid, "scenario": scenario, "label": "x", "flaws": [{"beat": i, "type": t} for i, t in enumerate(types)]}


def test_parse_counts_each_flaw_type_in_the_scenario_wording() -> None:
    text = ("The rhythm broke on 6 of 8 beats (one stall and five drops back against the swing). "
            "Commit to each rotation so the body never drops back. Keep momentum through the top instead of stalling.")
    assert parse_flaws(text, flaw_phrases(GYM)) == {"hesitation": 1, "rush": 0, "stumble": 5}
    ball = "The rhythm broke on 4 of 8 beats (two hesitations, a rushed bounce and one fumble where the ball slips back)."
    assert parse_flaws(ball, flaw_phrases(BALL)) == {"hesitation": 2, "rush": 1, "stumble": 1}
    # tips name flaws without a count ("stalling", "drops back"): not counted; a clean answer names none
    clean = "Excellent control: all 8 beats were on tempo with a steady rhythm. To refine, keep the same tempo."
    assert parse_flaws(clean, flaw_phrases(GYM)) == {"hesitation": 0, "rush": 0, "stumble": 0}
    # another scenario's wording is not this scenario's flaw
    assert parse_flaws("two rushed bounces", flaw_phrases(GYM))["rush"] == 0
    # unknown scenario: the type names themselves, digits allowed
    assert parse_flaws("2 rushes and 1 stumble", flaw_phrases("other")) == {"hesitation": 0, "rush": 2, "stumble": 1}


def test_record_exact_match_and_lost_beats_error() -> None:
    gold = sample(GYM, "hesitation", "stumble", "stumble", "stumble", "stumble", "stumble")  # 1 stall, 5 drops
    right = flaw_record("The rhythm broke on 6 of 8 beats (one stall and five drops back against the swing).", gold)
    assert right["flaw_exact"] and right["lost_beats_pred"] == right["lost_beats_gold"] == 6
    # the example: "two stalls, one rushed swing and three drops back" for "one stall and five drops back"
    wrong = flaw_record("The rhythm broke on 6 of 8 beats (two stalls, one rushed swing and three drops back "
                        "against the swing).", gold)
    assert not wrong["flaw_exact"] and wrong["flaws_pred"] == {"hesitation": 2, "rush": 1, "stumble": 3}
    assert wrong["lost_beats_pred"] == 6  # the count of lost beats is right, the mix is not
    clean = flaw_record("Excellent control: all 8 beats were on tempo.", sample(GYM))
    assert clean["flaw_exact"] and clean["lost_beats_gold"] == 0
    missed = flaw_record("Excellent control: all 8 beats were on tempo.", sample(GYM, "rush", "rush"))
    assert not missed["flaw_exact"] and missed["lost_beats_pred"] == 0 and missed["lost_beats_gold"] == 2


def test_stats_precision_recall_and_mae_by_hand() -> None:
    records = [
        flaw_record("broke on 2 of 8 beats (one stall and one rushed swing).", sample(GYM, "hesitation", "rush")),
        flaw_record("broke on 2 of 8 beats (two stalls).", sample(GYM, "hesitation", "stumble")),
        flaw_record("broke on 4 of 8 beats (four rushed swings).", sample(GYM, "rush", "rush")),
        flaw_record("Excellent control.", sample(GYM)),
    ]
    s = flaw_stats(records)
    assert s["flaw_n"] == 4 and s["flaw_exact"] == pytest.approx(2 / 4)
    assert s["lost_beats_mae"] == pytest.approx((0 + 0 + 2 + 0) / 4)
    # hesitation: named 1 + 2 = 3, true 1 + 1 = 2, hits 1 + 1 = 2
    assert s["per_type"]["hesitation"] == {"precision": pytest.approx(2 / 3), "recall": 1.0, "true": 2}
    # rush: named 1 + 4 = 5, true 1 + 2 = 3, hits 1 + 2 = 3
    assert s["per_type"]["rush"] == {"precision": pytest.approx(3 / 5), "recall": 1.0, "true": 3}
    # stumble: never named (precision undefined), 1 true, 0 found
    assert s["per_type"]["stumble"] == {"precision": None, "recall": 0.0, "true": 1}


def test_majority_mix_baseline_comes_from_train() -> None:
    train = [sample(GYM), sample(GYM), sample(GYM, "rush"), sample(BALL, "rush"), sample(BALL, "rush")]
    mix = majority_mix(train)
    assert mix == {"hesitation": 0, "rush": 1, "stumble": 0}
    records = [flaw_record("x", sample(GYM, "rush")), flaw_record("x", sample(GYM))]
    assert majority_mix_stats(records, mix) == {"flaw_exact": 0.5, "lost_beats_mae": 0.5}
    assert majority_mix([{"id": 1}]) is None


def test_summary_per_scenario_and_text_metrics() -> None:
    ref = "The rhythm broke on 1 of 8 beats (one rushed swing). Do not rush the downswing; stay with the count."
    recs = []
    for sid, (scen, text, flaws) in enumerate([(GYM, ref, ["rush"]), (BALL, "Excellent control.", ["rush"])]):
        r = {"id": sid, "scenario": scen, "feedback": text, "feedback_reference": ref}
        recs.append({**r, **flaw_record(text, sample(scen, *flaws))})
    summary = {"per_scenario": {GYM: {"n": 1}, BALL: {"n": 1}}}
    add_feedback_metrics(summary, recs, {"hesitation": 0, "rush": 0, "stumble": 0}, "train split")
    assert summary["flaw_exact"] == 0.5 and summary["per_scenario"][GYM]["flaw_exact"] == 1.0
    assert summary["per_scenario"][BALL]["flaw_exact"] == 0.0 and summary["flaw_majority"] == 0.0
    assert summary["per_scenario"][GYM]["bleu4"] == pytest.approx(100.0)
    assert summary["flaw_baseline"]["lost_beats_mae"] == 1.0
    untouched = {"per_scenario": {}}
    add_feedback_metrics(untouched, [{"scenario": GYM, "generated": "x"}], None, "train")
    assert untouched == {"per_scenario": {}}  # no structured flaws: no feedback metric


def test_bad_flaws_name_the_sample_and_types() -> None:
    with pytest.raises(ValueError, match="sample s9: flaw type\\(s\\) \\['slip'\\]"):
        true_flaws(sample(GYM, "slip"), where="sample s9")
    with pytest.raises(ValueError, match="'flaws' must be a list"):
        true_flaws({"flaws": "rush"})
    assert flaw_types([sample(GYM, "slip")]) == ["hesitation", "rush", "stumble", "slip"]


def test_feedback_turns_of_a_two_question_conversation() -> None:
    conv = [{"from": "human", "value": "<video> Level?"}, {"from": "gpt", "value": "Novice"},
            {"from": "human", "value": "What should they improve?"}, {"from": "gpt", "value": "Feedback."}]
    assert feedback_turns({"conversations": conv}) == ("What should they improve?", "Feedback.")
    assert feedback_turns({"conversations": conv[:2]}) is None
