"""Switches that trade memory or loading speed must not change what is learned."""
from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _losses(ws, out: Path, *extra: str) -> list[float]:
    from skillgpt.train.loop import train

    train(ws.config(2, "switch", "train.init_from=null", f"train.output_dir={out}", "train.micro_batch_size=2",
                    "train.max_steps=3", *extra))
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_activation_checkpointing_and_loader_workers_keep_the_losses(tiny_workspace, tmp_path, monkeypatch):
    import transformers.modeling_utils as hf

    reference = _losses(tiny_workspace, tmp_path / "plain")
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
