"""Switches that trade memory or loading speed must not change what is learned."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _losses(ws, out: Path, *extra: str) -> list[float]:
    from skillgpt.train.loop import train

    train(ws.config(2, "switch", "train.init_from=null", f"train.output_dir={out}", "train.micro_batch_size=2",
                    "train.max_steps=3", *extra))
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tiny_workspace, tmp_path_factory) -> list[float]:
    """Losses of the plain run every switch is compared with."""
    return _losses(tiny_workspace, tmp_path_factory.mktemp("plain"))


def test_activation_checkpointing_and_loader_workers_keep_the_losses(tiny_workspace, reference, tmp_path, monkeypatch):
    import transformers.modeling_utils as hf

    calls = {"n": 0}
    real = hf.checkpoint  # what transformers' activation checkpointing calls

    def counting(*args, **kwargs):
        calls["n"] += 1
        assert kwargs.get("use_reentrant") is False
        return real(*args, **kwargs)

    monkeypatch.setattr(hf, "checkpoint", counting)
    checkpointed = _losses(tiny_workspace, tmp_path / "ckpt", "train.activation_checkpointing=true")
    assert calls["n"] > 0  # the decoder layers really were recomputed
    assert max(abs(a - b) for a, b in zip(reference, checkpointed)) < 1e-6
    monkeypatch.setattr(hf, "checkpoint", real)
    workers = _losses(tiny_workspace, tmp_path / "workers", "data.num_workers=1", "data.prefetch_factor=1")
    assert max(abs(a - b) for a, b in zip(reference, workers)) < 1e-6


def test_compile_keeps_the_losses_and_really_compiles(tiny_workspace, reference, tmp_path):
    """train.compile traces the decoder layers and encoders (aot_eager: dynamo + AOT autograd without
    inductor's C++ build, so the test stays fast) and learns the same as eager."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = _losses(tiny_workspace, tmp_path / "compiled", "train.compile=true", "train.compile_backend=aot_eager")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 2  # a decoder layer and the encoder
    assert max(abs(a - b) for a, b in zip(reference, compiled)) < 1e-5
    torch._dynamo.reset()


def test_optimizer_uses_the_fused_adamw_kernel_where_torch_has_one():
    import torch

    from skillgpt.config.schema import TrainConfig
    from skillgpt.train.ds_config import fused_adamw_available, make_optimizer

    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert fused_adamw_available(cpu)
    assert make_optimizer(cpu, TrainConfig(output_dir="x"), {}).defaults["fused"] is True
    assert not fused_adamw_available([torch.nn.Parameter(torch.zeros(3, device="meta"))])
    assert not fused_adamw_available([])


def test_unknown_compile_backend_is_named(tiny_workspace):
    from skillgpt.models.build import build_model
    from skillgpt.models.compile import compile_blocks

    model, _ = build_model(tiny_workspace.config(2, "b", "train.init_from=null"))
    with pytest.raises(ValueError, match=r"train.compile_backend: unknown torch.compile backend 'inducter'"):
        compile_blocks(model, "inducter")
