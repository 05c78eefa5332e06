"""Multiple-choice, AQA-score and feedback protocols: parsing and metrics."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from skillgpt.config import load_config
from skillgpt.config.loader import ConfigError
from skillgpt.eval.report import format_task
from skillgpt.eval.tasks import (
    answer_index, multiple_choice_record, option_strings, parse_score, run_task, score_metrics, split_last_reply,
    text_metrics,
)

REPO = Path(__file__).resolve().parents[2]
# per-token log-probs of each option's answer tokens: "(A) no" is short and unlikely per token, the
# correct "(B) ..." long and likely per token; a sum ranks the short option first
OPTION_TOKENS = {"(A) no": [-1.0, -1.0], "(B) yes, with both hands on the bar": [-0.5] * 6}


class FakeAssistant:
    """The assistant calls run_task makes, without a model: scores from OPTION_TOKENS, canned answers."""

    def __init__(self, option_scoring: str = "mean", answers: dict[str, str] | None = None) -> None:
        self.cfg = SimpleNamespace(eval=SimpleNamespace(task="multiple_choice", option_scoring=option_scoring,
                                                        question="<video> Score?", max_new_tokens=8))
        self.answers, self.normalize_seen = answers or {}, []

    def load(self, sample: dict, root: Path) -> list:
        return [("video", sample["id"])]

    def label_scores(self, samples: list, question: str, labels: list[str], normalize: bool = False) -> torch.Tensor:
        self.normalize_seen.append(normalize)
        agg = (lambda t: sum(t) / len(t)) if normalize else sum
        return torch.tensor([[agg(OPTION_TOKENS[o]) for o in labels]] * len(samples))

    def ask(self, question: str, media: list, max_new_tokens: int) -> str:
        return self.answers[media[0][1]]


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


def _mc_samples() -> list[dict]:
    return [{"id": "m1", "video": "a.mp4", "question": "Did they grip the bar?",
             "candidates": ["no", "yes, with both hands on the bar"], "answer": "yes, with both hands on the bar"}]


def test_option_scoring_mean_normalises_length_and_is_stated(tmp_path) -> None:
    mean, total = FakeAssistant("mean"), FakeAssistant("sum")
    s_mean, (r_mean,) = run_task(mean, _mc_samples(), tmp_path, "mc.json")
    s_sum, (r_sum,) = run_task(total, _mc_samples(), tmp_path, "mc.json")
    assert mean.normalize_seen == [True] and total.normalize_seen == [False]
    assert r_mean["pred"] == 1 and s_mean["accuracy"] == 1.0  # per-token mean: the long, likely option
    assert r_sum["pred"] == 0 and s_sum["accuracy"] == 0.0  # sum: the short option wins by length alone
    assert s_mean["option_scoring"] == "mean" and s_sum["option_scoring"] == "sum"
    assert "option_scoring" in format_task(s_mean) and "mean" in format_task(s_mean)


def test_option_scoring_choices_are_checked_at_config_load() -> None:
    assert load_config(REPO / "config" / "stage_2.yaml", ["preset=tiny"]).eval.option_scoring == "mean"
    with pytest.raises(ConfigError, match="eval.option_scoring: invalid value 'max'; expected one of sum, mean"):
        load_config(REPO / "config" / "stage_2.yaml", ["preset=tiny", "eval.option_scoring=max"])


def test_score_answers_without_a_number_are_counted_and_named(tmp_path) -> None:
    fake = FakeAssistant(answers={"d1": "Score: 80.5", "d2": "a clean entry", "d3": "72", "d4": "I cannot tell"})
    fake.cfg.eval.task = "score"
    samples = [{"id": f"d{i}", "video": "a.mp4", "score": float(70 + i)} for i in range(1, 5)]
    summary, records = run_task(fake, samples, tmp_path, "aqa.json")
    assert [r["parsed"] for r in records] == [True, False, True, False]
    assert (summary["n"], summary["parsed"], summary["unparsed"]) == (4, 2, 2)
    assert summary["unparsed_ids"] == ["d2", "d4"]
    printed = format_task(summary)
    assert "| n | parsed | unparsed |" in printed and "| 4 | 2 | 2 |" in printed
    assert "2 of 4 answers have no number" in printed and "d2, d4" in printed
