"""The global batch is set in config; accumulation is derived from it for the number of processes."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from skillgpt.train.ds_config import derive_grad_accum

REPO = Path(__file__).resolve().parents[2]


def test_accumulation_follows_the_number_of_processes():
    tc = SimpleNamespace(global_batch_size=16, micro_batch_size=2, grad_accum=1)
    assert [derive_grad_accum(tc, w) for w in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(ValueError, match="global_batch_size 16 is not a multiple of micro_batch_size 2 x 3"):
        derive_grad_accum(tc, 3)
    assert derive_grad_accum(SimpleNamespace(global_batch_size=None, micro_batch_size=2, grad_accum=5), 4) == 5


def test_training_with_a_global_batch_accumulates(tiny_workspace, tmp_path):
    from skillgpt.config import load_config, load_resolved
    from skillgpt.train.loop import train

    out = tmp_path / "run"
    cfg = load_config(REPO / "config" / "stage_2.yaml", tiny_workspace.overrides(
        2, "gb", "train.init_from=null", f"train.output_dir={out}", "train.micro_batch_size=2",
        "train.global_batch_size=4", "train.epochs=1"))
    train(cfg)
    steps = (out / "metrics.jsonl").read_text().splitlines()
    assert len(steps) == 8 // 4  # 8 training samples, 4 per optimizer step
    assert load_resolved(out / "config.yaml").train.grad_accum == 2
    assert all("loss" in json.loads(s) for s in steps)
