"""Tests for skillgpt.eval.metrics and skillgpt.eval.report on hand-built records."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from skillgpt.eval.metrics import generated_correct, mentioned_labels, softmax, summarize
from skillgpt.eval.report import format_table, save_confusion_png, write_results

LABELS = ["Novice", "Early Expert", "Intermediate Expert", "Late Expert"]
N, EE, IE, LE = LABELS


def _logs(*probs: float) -> list[float]:
    """Log-probabilities, so softmax(scores) gives `probs` back exactly (they sum to 1)."""
    return [math.log(p) for p in probs]


def _rec(rid: str, scenario: str, label: str, pred: str, scores: list[float], generated: str) -> dict:
    return {"id": rid, "scenario": scenario, "label": label, "pred": pred, "scores": scores, "generated": generated}


TRAIN = [N, N, N, LE, LE, EE]  # the train split's gold labels: Novice is its majority
RECORDS = [
    _rec("r1", "basketball", N, N, _logs(0.5, 0.25, 0.125, 0.125), "The player is a Novice."),
    _rec("r2", "basketball", LE, EE, _logs(0.1, 0.4, 0.1, 0.4), "Late Expert"),
    _rec("r3", "basketball", LE, LE, _logs(0.1, 0.1, 0.2, 0.6), "late expert, clearly."),
    _rec("r4", "soccer", N, EE, [0.0, 0.0, 0.0, 0.0], "Not a Novice, but an Early Expert."),
    _rec("r5", "soccer", EE, EE, _logs(0.2, 0.5, 0.2, 0.1), "An expert: early expert."),
    _rec("r6", "soccer", N, IE, _logs(0.3, 0.1, 0.5, 0.1), "Intermediate Expert level"),
]


def test_summary_matches_hand_computed_numbers() -> None:
    s = summarize(RECORDS, LABELS, TRAIN)
    assert s["n"] == 6
    assert s["top1"] == pytest.approx(3 / 6)  # r1, r3, r5
    assert s["generated_accuracy"] == pytest.approx(4 / 6)  # r1, r2, r3, r5
    assert s["majority_label"] == N  # train: 3 Novice, 2 Late, 1 Early
    assert s["majority_baseline"] == pytest.approx(3 / 6)
    assert s["baseline"] == {"source": "train split", "n": 6, "reason": None}
    assert s["mean_gold_prob"] == pytest.approx((0.5 + 0.4 + 0.6 + 0.25 + 0.5 + 0.3) / 6)
    assert s["confusion"] == [[1, 1, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 0, 1]]
    recall = s["per_label_recall"]
    assert recall[N] == pytest.approx(1 / 3)
    assert recall[EE] == 1.0
    assert recall[IE] is None
    assert recall[LE] == pytest.approx(1 / 2)


def test_per_scenario_numbers() -> None:
    per = summarize(RECORDS, LABELS, TRAIN)["per_scenario"]
    assert list(per) == ["basketball", "soccer"]
    b, s = per["basketball"], per["soccer"]
    assert (b["n"], s["n"]) == (3, 3)
    assert b["top1"] == pytest.approx(2 / 3) and s["top1"] == pytest.approx(1 / 3)
    assert b["generated_accuracy"] == 1.0 and s["generated_accuracy"] == pytest.approx(1 / 3)
    # Baseline = always predicting the train majority label (Novice) inside each scenario.
    assert b["majority_baseline"] == pytest.approx(1 / 3) and s["majority_baseline"] == pytest.approx(2 / 3)
    assert b["mean_gold_prob"] == pytest.approx(0.5) and s["mean_gold_prob"] == pytest.approx(0.35)


def test_early_expert_is_not_late_expert() -> None:
    assert mentioned_labels("Early Expert", LABELS) == [EE]
    assert not generated_correct("Early Expert", LE, LABELS)
    assert not generated_correct("early expert", LE, LABELS)
    assert generated_correct("EARLY EXPERT", EE, LABELS)
    assert generated_correct("This is a late-expert performance.", LE, LABELS)


def test_novice_inside_a_sentence_and_word_boundaries() -> None:
    assert generated_correct("I would say the performer is clearly a novice here.", N, LABELS)
    assert mentioned_labels("A supernovice, an expert.", LABELS) == []
    assert not generated_correct("Novice or Late Expert", N, LABELS)
    assert mentioned_labels("Novice or Late Expert", LABELS) == [N, LE]
    assert not generated_correct("", N, LABELS)


def test_longest_label_wins_over_nested_label() -> None:
    labels = ["Expert", "Late Expert"]
    assert mentioned_labels("a Late Expert", labels) == ["Late Expert"]
    assert mentioned_labels("an Expert, not a Late Expert", labels) == ["Expert", "Late Expert"]


def test_softmax_is_stable() -> None:
    probs = softmax([-1000.0, -1000.0 + math.log(3)])
    assert probs == pytest.approx([0.25, 0.75])


def test_unknown_gold_label_raises_with_id_and_label() -> None:
    bad = RECORDS[:2] + [_rec("clip-42", "soccer", "Grandmaster", N, [0.0] * 4, "Novice")]
    with pytest.raises(ValueError, match=r"clip-42.*Grandmaster"):
        summarize(bad, LABELS)


def test_unknown_pred_and_wrong_score_length_raise() -> None:
    with pytest.raises(ValueError, match="x1"):
        summarize([_rec("x1", "s", N, "Pro", [0.0] * 4, "")], LABELS)
    with pytest.raises(ValueError, match="x2"):
        summarize([_rec("x2", "s", N, N, [0.0] * 3, "")], LABELS)


def test_majority_tie_goes_to_first_label() -> None:
    recs = [_rec("a", "s", LE, LE, [0.0] * 4, ""), _rec("b", "s", EE, LE, [0.0] * 4, "")]
    s = summarize(recs, LABELS, [LE, EE])
    assert s["majority_label"] == EE
    assert s["majority_baseline"] == 0.5


def test_empty_records() -> None:
    s = summarize([], LABELS)
    assert s["n"] == 0 and s["top1"] is None and s["majority_label"] is None
    assert s["per_scenario"] == {} and s["confusion"] == [[0] * 4 for _ in range(4)]
    assert "all" in format_table(s, LABELS)


def test_table_contains_scenarios_baseline_and_confusion() -> None:
    s = summarize(RECORDS, LABELS, TRAIN)
    table = format_table(s, LABELS)
    for token in ["basketball", "soccer", "all", "top-1", "majority", "gold \\ pred", *LABELS]:
        assert token in table
    all_row = next(line for line in table.splitlines() if line.startswith("all"))
    assert all_row.split()[1:4] == ["6", "50.0%", "50.0%"]  # n, top-1, majority side by side
    late_row = next(line for line in table.splitlines() if line.startswith("Late Expert"))
    assert late_row.split()[2:] == ["0", "1", "0", "1", "50.0%"]


def test_write_results_files(tmp_path: Path) -> None:
    s = summarize(RECORDS, LABELS, TRAIN)
    paths = write_results(s, RECORDS, LABELS, tmp_path / "out")
    assert set(paths) == {"results_json", "confusion_txt", "confusion_png", "results_md"}
    assert "| all |" in paths["results_md"].read_text()
    assert all(p.is_file() for p in paths.values())
    data = json.loads(paths["results_json"].read_text())
    assert data["summary"]["confusion"] == s["confusion"]
    assert [r["id"] for r in data["records"]] == [r["id"] for r in RECORDS]
    assert data["labels"] == LABELS
    assert "basketball" in paths["confusion_txt"].read_text()
    assert paths["confusion_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_for_empty_summary(tmp_path: Path) -> None:
    path = save_confusion_png(summarize([], LABELS), LABELS, tmp_path / "nested" / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generated_accuracy_is_undefined_when_generation_was_skipped() -> None:
    records = [{**r, "generated": None} for r in RECORDS]
    assert summarize(records, LABELS)["generated_accuracy"] is None


def test_majority_baseline_comes_from_the_train_split_not_the_evaluated_one() -> None:
    # the evaluated split's own majority is Novice (3 of 6): an oracle would report 50%
    s = summarize(RECORDS, LABELS, [LE, LE, LE, N, EE])
    assert s["majority_label"] == LE
    assert s["majority_baseline"] == pytest.approx(2 / 6)  # r2, r3 are Late Expert
    assert s["per_scenario"]["basketball"]["majority_baseline"] == pytest.approx(2 / 3)
    assert s["per_scenario"]["soccer"]["majority_baseline"] == 0.0
    table = format_table(s, LABELS)
    assert "majority label: Late Expert (most frequent in the train split, 5 labelled samples" in table
    all_row = next(line for line in table.splitlines() if line.startswith("all"))
    assert all_row.split()[1:4] == ["6", "50.0%", "33.3%"]


def test_no_train_labels_means_no_baseline_and_says_why(tmp_path: Path) -> None:
    s = summarize(RECORDS, LABELS)
    assert s["majority_label"] is None and s["majority_baseline"] is None
    assert s["per_scenario"]["soccer"]["majority_baseline"] is None
    assert s["baseline"]["source"] is None and "oracle" in s["baseline"]["reason"]
    assert "majority baseline: none (no train-split labels" in format_table(s, LABELS)
    empty = summarize(RECORDS, LABELS, [])
    assert empty["majority_baseline"] is None and "no labelled samples" in empty["baseline"]["reason"]
    paths = write_results(s, RECORDS, LABELS, tmp_path)
    assert json.loads(paths["results_json"].read_text())["summary"]["baseline"]["reason"] == s["baseline"]["reason"]
    assert "majority baseline: none" in paths["results_md"].read_text()


def test_train_label_outside_labels_is_refused() -> None:
    with pytest.raises(ValueError, match=r"baseline labels \(train split\) \['Grandmaster'\]"):
        summarize(RECORDS, LABELS, [N, "Grandmaster"])
