"""A run is safe to stop: SIGTERM saves and exits, a corrupt newest checkpoint falls back to the one
before, changed settings are refused on resume, and a failed save leaves the previous checkpoint intact."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skillgpt.checkpoint.delta import list_checkpoints
from skillgpt.checkpoint.manifest import verify_manifest

REPO = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}


def _command(ws, out: Path, *extra: str) -> list[str]:
    overrides = [o for o in ws.overrides(2, "rel", "train.init_from=null") if not o.startswith("train.output_dir")]
    return [sys.executable, "-m", "skillgpt.cli", "train", str(REPO / "config" / "stage_2.yaml"), *overrides,
            f"train.output_dir={out}", "train.micro_batch_size=2", "train.epochs=2", "train.keep_last=0", *extra]


def _in_process(cmd: list[str], capsys) -> tuple[int, str, str]:
    """Run `cmd` (a `python -m skillgpt.cli ...` line) in this process: only the run that receives a signal needs
    a process of its own, and every process start-up costs the suite seconds of imports."""
    from skillgpt.cli import main

    capsys.readouterr()
    status = main(cmd[3:])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_resumes(tiny_workspace, tmp_path, capsys):
    out = tmp_path / "run"
    proc = subprocess.Popen(_command(tiny_workspace, out, "train.save_every=100"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    deadline = time.time() + 240
    while not ((out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().strip()):
        assert proc.poll() is None and time.time() < deadline, "run ended before its first step"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, output[-3000:]
    assert "stopped by SIGTERM" in output
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    saved = list_checkpoints(out)
    assert saved and saved[-1].name == f"checkpoint-{steps[-1]}" and verify_manifest(saved[-1]) is None
    assert steps[-1] < 8, "the run finished before the signal arrived"
    status, stdout, stderr = _in_process(_command(tiny_workspace, out, "train.save_every=100"), capsys)
    assert status == 0 and "resumed from" in stdout + stderr
    assert list_checkpoints(out)[-1].name == "checkpoint-8"


def test_corrupt_newest_checkpoint_falls_back_and_changed_settings_are_refused(tiny_workspace, tmp_path, capsys):
    out = tmp_path / "run"
    cmd = _command(tiny_workspace, out, "train.save_every=2", "train.max_steps=4")
    assert _in_process(cmd, capsys)[0] == 0
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-2", "checkpoint-4"]
    shard = out / "checkpoint-4" / "projector.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-1] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert "corrupt" in verify_manifest(out / "checkpoint-4")

    status, _, stderr = _in_process([*cmd, "train.lr=0.5"], capsys)
    assert status == 2 and "train.lr" in stderr and "allow_config_change" in stderr

    with pytest.warns(UserWarning, match=r"skipping checkpoint .*checkpoint-4"):  # inference-only settings may change
        status, stdout, _ = _in_process([*cmd, "generation.media_dir=elsewhere", "eval.batch_size=3"], capsys)
    assert status == 0 and "resumed from" in stdout and "checkpoint-2 at step 2" in stdout
    assert verify_manifest(out / "checkpoint-4") is None  # steps 3-4 redone and saved again


def test_failed_save_keeps_the_previous_checkpoint(tiny_workspace, tmp_path, monkeypatch):
    import skillgpt.checkpoint.resume as resume
    from skillgpt.config import load_config
    from skillgpt.train.loop import train

    calls = {"n": 0}
    real = resume.save_trained_parts

    def disk_full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(resume, "save_trained_parts", disk_full)
    out = tmp_path / "run"
    cfg = load_config(REPO / "config" / "stage_2.yaml",
                      [o for o in _command(tiny_workspace, out, "train.save_every=1", "train.max_steps=2")[5:]])
    with pytest.raises(OSError, match=r"checkpoint-2 failed: .*No space left.*checkpoint-1 is intact"):
        train(cfg)
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-1"]
    assert verify_manifest(out / "checkpoint-1") is None and not list(out.glob(".tmp-*"))


def _nan_on(calls_to_poison: set[int] | None, monkeypatch):
    """Make SkillGPT.forward return NaN on the given call numbers (all calls when None)."""
    from skillgpt.models.skill_model import SkillGPT

    real, count = SkillGPT.forward, {"n": 0}

    def forward(self, *args, **kwargs):
        count["n"] += 1
        loss = real(self, *args, **kwargs)
        return loss * float("nan") if calls_to_poison is None or count["n"] in calls_to_poison else loss

    monkeypatch.setattr(SkillGPT, "forward", forward)


def _cfg(ws, out: Path, *extra: str):
    from skillgpt.config import load_config

    return load_config(REPO / "config" / "stage_2.yaml", _command(ws, out, *extra)[5:])


def _records(out: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def _trained(ckpt: Path) -> dict:
    from safetensors.torch import load_file

    return {**load_file(str(ckpt / "projector.safetensors")), **load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def test_a_nonfinite_loss_skips_the_step_and_is_logged(tiny_workspace, tmp_path, monkeypatch):
    from skillgpt.train.loop import train

    _nan_on({2}, monkeypatch)
    out = tmp_path / "run"
    train(_cfg(tiny_workspace, out, "train.max_steps=3", "train.save_every=1"))
    events = _records(out, "events.jsonl")
    assert len(events) == 1 and events[0]["event"] == "nonfinite_loss" and len(events[0]["batch"]) == 2
    steps = _records(out, "metrics.jsonl")
    assert [r.get("skipped") for r in steps] == [None, "nonfinite_loss", None]
    assert steps[0]["loss"] == steps[0]["loss"] and steps[2]["loss"] == steps[2]["loss"]  # not NaN
    assert steps[2]["lr"] == steps[1]["lr"]  # the LR schedule did not advance on the skipped step
    assert _same(_trained(out / "checkpoint-1"), _trained(out / "checkpoint-2"))  # weights untouched
    assert not _same(_trained(out / "checkpoint-2"), _trained(out / "checkpoint-3"))


def test_a_nonfinite_gradient_with_a_finite_loss_skips_the_step(tiny_workspace, tmp_path, monkeypatch):
    """A NaN that appears only in the backward pass (e.g. an unstable custom op) is caught too."""
    import torch

    from skillgpt.models.skill_model import SkillGPT
    from skillgpt.train.loop import train

    real, calls = SkillGPT.forward, {"n": 0}

    def forward(self, *args, **kwargs):
        calls["n"] += 1
        loss = real(self, *args, **kwargs)
        if calls["n"] == 2:  # identity forward, NaN gradient
            poison = next(p for p in self.projector.parameters() if p.requires_grad)
            loss = loss + _nan_grad(poison)
        return loss

    def _nan_grad(p: torch.Tensor) -> torch.Tensor:
        class NanGrad(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.sum() * 0

            @staticmethod
            def backward(ctx, g):
                return torch.full(p.shape, float("nan"), dtype=p.dtype)

        return NanGrad.apply(p)

    monkeypatch.setattr(SkillGPT, "forward", forward)
    out = tmp_path / "run"
    train(_cfg(tiny_workspace, out, "train.max_steps=3", "train.save_every=1"))
    steps = _records(out, "metrics.jsonl")
    assert all(r["loss"] == r["loss"] for r in steps)  # every loss finite
    assert [r.get("skipped") for r in steps] == [None, "nonfinite_grad", None]
    assert _records(out, "events.jsonl")[0]["event"] == "nonfinite_grad"
    assert _same(_trained(out / "checkpoint-1"), _trained(out / "checkpoint-2"))


def test_too_many_nonfinite_steps_stop_the_run_with_a_checkpoint(tiny_workspace, tmp_path, monkeypatch):
    from skillgpt.train.loop import train

    _nan_on(None, monkeypatch)
    out = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="3 non-finite steps in a row.*checkpoint saved"):
        train(_cfg(tiny_workspace, out, "train.max_nonfinite=3"))
    assert [p.name for p in list_checkpoints(out)] == ["checkpoint-3"]
    assert len(_records(out, "events.jsonl")) == 3


def test_out_of_memory_names_the_settings_to_lower(tiny_workspace, tmp_path, monkeypatch):
    import torch

    from skillgpt.models.skill_model import SkillGPT
    from skillgpt.train.loop import train

    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(SkillGPT, "forward", oom)
    with pytest.raises(MemoryError, match=r"train.micro_batch_size \(2.*model.llm.max_length.*data.video.num_clips"):
        train(_cfg(tiny_workspace, tmp_path / "run"))


def test_a_checkpoint_for_another_architecture_is_refused_naming_the_difference(trained_run):
    from skillgpt.models.build import build_model

    cfg = trained_run.workspace.config(2, "arch", f"train.init_from={trained_run.stage_1}",
                                       "model.projector.name=linear", "model.encoder.pool=2")
    with pytest.raises(ValueError, match=r"another architecture: .*model.encoder.pool \(4 in the checkpoint, 2 here\)"
                                         r".*model.projector.name \('mlp2x_gelu' in the checkpoint, 'linear' here\)"):
        build_model(cfg)


def test_keep_best_keeps_the_lowest_val_loss_beside_the_last(tiny_workspace, tmp_path, capsys):
    import re

    from skillgpt.checkpoint.resume import best_checkpoint
    from skillgpt.train.loop import train

    out = tmp_path / "run"
    cfg = _cfg(tiny_workspace, out, "train.save_every=1", "train.max_steps=4", "train.keep_last=1",
               "train.keep_best=val_loss", "train.lr=0.05")
    cfg.train.keep_last = 1
    train(cfg)
    kept = list_checkpoints(out)
    losses = {p.name: json.loads((p / "metrics.json").read_text())["val_loss"] for p in kept}
    assert kept[-1].name == "checkpoint-4" and len(kept) <= 2
    assert best_checkpoint(out, "val_loss") in kept and all(v == v for v in losses.values())
    printed = dict(re.findall(r"step (\d+): val_loss ([\d.]+)", capsys.readouterr().out))
    assert sorted(printed) == ["1", "2", "3", "4"]
    best_step = min(printed, key=lambda k: float(printed[k]))
    assert best_checkpoint(out, "val_loss").name == f"checkpoint-{best_step}"
    assert {p.name for p in kept} == {"checkpoint-4", f"checkpoint-{best_step}"}
