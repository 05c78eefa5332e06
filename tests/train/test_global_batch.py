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


def test_each_step_takes_the_same_micro_batches_on_any_number_of_processes():
    from skillgpt.train.order import rank_share

    order = list(range(100, 124))  # 24 samples: 3 steps of a global batch of 8
    one = rank_share(order, micro_batch=2, grad_accum=4, world=1, rank=0)
    assert one == order
    for world, accum in ((2, 2), (4, 1)):
        shares = [rank_share(order, 2, accum, world, r) for r in range(world)]
        per_step = 2 * accum
        for step in range(3):
            mine = [s[step * per_step : (step + 1) * per_step] for s in shares]
            assert sorted(i for m in mine for i in m) == order[step * 8 : (step + 1) * 8]
    assert rank_share(order[:7], 2, 4, 1, 0) == []  # no partial step
