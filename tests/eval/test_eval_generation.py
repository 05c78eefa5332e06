"""`skillgpt eval` with eval.task=generation: per modality the stage-2 alignment loss, caption retrieval top-1 and
signal-token accuracy of a checkpoint, in results.json, results.md and the console (shared `nextgpt_run`)."""
from __future__ import annotations

import json

import pytest
import torch

from skillgpt.cli import main
from skillgpt.eval.generation import _modality_summary

KEYS = {"n", "captions", "l2_loss", "retrieval_top1", "chance", "signal_token_acc"}


def _eval(ckpt, run, out, *extra: str) -> dict:
    assert main(["eval", "--ckpt", str(ckpt), "--split", "train", "--out", str(out), f"data.train={run.data}/tx_train.json",
                 "data.format=conversation", f"data.caption_cache.image={run.cache}", "eval.task=generation",
                 *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_generation_eval_measures_what_stage_two_trained(nextgpt_run, tmp_path, capsys) -> None:
    trained = _eval(nextgpt_run.stage_2, nextgpt_run, tmp_path / "trained")
    console = capsys.readouterr().out
    # stage 1's checkpoint: the same model, its signal rows and output projector as built (untrained)
    untrained = _eval(nextgpt_run.stage_1, nextgpt_run, tmp_path / "untrained")
    t, u = trained["summary"]["per_modality"]["image"], untrained["summary"]["per_modality"]["image"]
    assert set(t) == KEYS and (t["n"], t["captions"], t["chance"]) == (8, 8, 1 / 8)
    assert 0.0 <= t["retrieval_top1"] <= 1.0 and 0.0 <= u["retrieval_top1"] <= 1.0
    assert t["l2_loss"] < 0.9 * u["l2_loss"]
    assert t["signal_token_acc"] > u["signal_token_acc"]
    assert trained["summary"]["task"] == "generation" and trained["summary"]["n_text"] == 0
    records = trained["records"]
    assert len(records) == 8 and all({"l2", "retrieved_own", "signal_token_acc"} <= set(r) for r in records)
    md = (tmp_path / "trained" / "results.md").read_text()
    assert "| modality | n | captions | l2 loss | retrieval top-1 | chance | signal-token acc |" in md
    assert f"| image | 8 | 8 | {t['l2_loss']:.4f} |" in md and "task: generation" in console and "| image |" in console


def test_proficiency_eval_of_generate_samples_names_the_task(nextgpt_run, tmp_path, capsys) -> None:
    assert main(["eval", "--ckpt", str(nextgpt_run.stage_2), "--split", "train", "--out", str(tmp_path),
                 f"data.train={nextgpt_run.data}/tx_train.json", "eval.task=proficiency"]) != 0
    assert "evaluate this file with eval.task=generation" in capsys.readouterr().err


def _items(pred: torch.Tensor, target: torch.Tensor, captions: list[str]) -> list:
    return [(p, t, {"caption": c, "l2": 0.0, "signal_token_acc": 1.0}) for p, t, c in zip(pred, target, captions)]


def test_retrieval_among_distinct_captions() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 5, 4, generator=g)
    exact = _modality_summary(_items(target + 0.01, target, ["a", "b", "c"]))
    assert (exact["retrieval_top1"], exact["captions"], exact["chance"]) == (1.0, 3, pytest.approx(1 / 3))
    swapped = _modality_summary(_items(target[[1, 0, 2]], target, ["a", "b", "c"]))
    assert swapped["retrieval_top1"] == pytest.approx(1 / 3)
    # a caption two samples share is one candidate: both find it
    shared = _modality_summary(_items(target[[0, 0, 1]] + 0.01, target[[0, 0, 1]], ["a", "a", "b"]))
    assert (shared["retrieval_top1"], shared["captions"], shared["n"]) == (1.0, 2, 3)
    with pytest.raises(ValueError, match="retrieval needs"):
        from skillgpt.generation.alignment import nearest
        nearest(target[:1], target[:1])
