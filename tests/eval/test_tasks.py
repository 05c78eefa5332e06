"""Multiple-choice, AQA-score and feedback protocols: parsing and metrics."""
from __future__ import annotations

import pytest

from skillgpt.eval.tasks import (
    answer_index, multiple_choice_record, option_strings, parse_score, score_metrics, split_last_reply,
    text_metrics,
)


def test_options_and_answers_in_every_mvbench_spelling():
    s = {"candidates": ["walk", "run", "jump"], "answer": "run"}
    assert option_strings(s["candidates"]) == ["(A) walk", "(B) run", "(C) jump"]
    for ans in ("run", "(B) run", "(B)", "B"):
        assert answer_index({**s, "answer": ans}, "f.json: sample 1") == 1
    with pytest.raises(ValueError, match="f.json: sample 1: answer 'swim'"):
        answer_index({**s, "answer": "swim"}, "f.json: sample 1")
    rec = multiple_choice_record([-3.0, -1.0, -2.0], s, "x")
    assert rec["pred"] == 1 and rec["correct"]


def test_score_parsing_and_aqa_metrics():
    assert parse_score("Score: 78.40 (difficulty 3.0).") == 78.4
    assert parse_score("no idea") is None
    m = score_metrics([10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, None])
    assert m["parsed"] == 3 and m["spearman_rho"] == pytest.approx(1.0)
    # relative L2 = 100 * mean(((gold - pred) / (max - min))^2) over parsed pairs
    assert m["relative_l2"] == pytest.approx(100 * ((9 / 20) ** 2 + (18 / 20) ** 2 + (27 / 20) ** 2) / 3)
    inverse = score_metrics([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    assert inverse["spearman_rho"] == pytest.approx(-1.0)


def test_feedback_reference_and_text_metrics():
    turns = [{"from": "human", "value": "<video> Level?"}, {"from": "gpt", "value": "Novice"},
             {"from": "human", "value": "Improve?"}, {"from": "gpt", "value": "Keep the ball moving."}]
    context, ref = split_last_reply(turns, "x")
    assert len(context) == 3 and ref == "Keep the ball moving."
    same = text_metrics(["keep the ball moving on every beat"], ["keep the ball moving on every beat"])
    other = text_metrics(["a completely unrelated sentence here"], ["keep the ball moving on every beat"])
    assert same["bleu4"] == pytest.approx(100.0) and other["bleu4"] < 10 and other["chrf"] < same["chrf"]
    with pytest.raises(ValueError, match="no assistant turn"):
        split_last_reply([{"from": "human", "value": "hi"}], "x")
