"""DeepSpeed configs: every shipped file is accepted, offload picks CPU Adam, stage 0 is refused."""
from __future__ import annotations

from pathlib import Path

import pytest

from skillgpt.train.ds_config import make_deepspeed_config, offloads_optimizer

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(str(p.relative_to(REPO / "dsconfig")) for p in (REPO / "dsconfig").glob("**/*.json"))  # nextgpt/ too


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_is_accepted(tiny_workspace, name):
    ds = make_deepspeed_config(tiny_workspace.config(2, "ds", f"train.deepspeed_config={REPO}/dsconfig/{name}",
                                                     "train.micro_batch_size=2", "train.grad_accum=3"), 2)
    assert ds["train_batch_size"] == 2 * 3 * 2 and ds["zero_optimization"]["stage"] in (2, 3)
    assert ds["bf16"]["check_grad_overflow"] is True
    assert offloads_optimizer(ds) == ("offload" in name)


def test_offloaded_optimizer_is_deepspeed_cpu_adam(monkeypatch):
    import sys
    import types

    from skillgpt.train.ds_config import make_optimizer

    made = {}
    fake = types.ModuleType("deepspeed.ops.adam")
    fake.DeepSpeedCPUAdam = lambda params, **kw: made.update(kw) or "cpu-adam"  # the real one compiles a C++ op
    monkeypatch.setitem(sys.modules, "deepspeed.ops.adam", fake)
    tc = types.SimpleNamespace(lr=1e-3, weight_decay=0.1)
    assert make_optimizer([], tc, {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}) == "cpu-adam"
    assert made == {"lr": 1e-3, "weight_decay": 0.1, "adamw_mode": True}
    import torch

    p = torch.nn.Parameter(torch.zeros(2))
    assert isinstance(make_optimizer([p], tc, {"zero_optimization": {"stage": 2}}), torch.optim.AdamW)


def test_zero_stage_0_is_refused(tiny_workspace, tmp_path):
    ds = tmp_path / "z0.json"
    ds.write_text('{"zero_optimization": {"stage": 0}}')
    with pytest.raises(ValueError, match=r"z0.json: zero_optimization.stage must be 1, 2 or 3 \(got 0\)"):
        make_deepspeed_config(tiny_workspace.config(2, "q", f"train.deepspeed_config={ds}"), 1)


def test_compile_with_zero_3_is_refused(tiny_workspace):
    cfg = tiny_workspace.config(2, "c", f"train.deepspeed_config={REPO}/dsconfig/zero3.json", "train.compile=true")
    with pytest.raises(ValueError, match=r"zero3.json: train.compile works with ZeRO-1/2 only"):
        make_deepspeed_config(cfg, 1)
    make_deepspeed_config(tiny_workspace.config(2, "c", "train.compile=true"), 1)  # ZeRO-2: accepted
