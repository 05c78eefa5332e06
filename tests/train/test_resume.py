"""Kill a training run with SIGKILL, run the same command again: it resumes and ends where an
uninterrupted run ends (same weights, same per-step losses, each step logged once)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]

TOTAL_STEPS = 8  # 8 samples / micro-batch 2 = 4 steps per epoch, 2 epochs


def _command(trained_run, out: Path) -> list[str]:
    overrides = trained_run.workspace.overrides(2, "resume", f"train.init_from={trained_run.stage_1}")
    overrides = [o for o in overrides if not o.startswith(("train.output_dir", "train.epochs", "train.micro_batch"))]
    return [sys.executable, "-m", "skillgpt.cli", "train", str(REPO / "config" / "stage_2.yaml"), *overrides,
            f"train.output_dir={out}", "train.epochs=2", "train.micro_batch_size=2", "train.save_every=2",
            "train.keep_last=0"]


# A fresh single-process run each time: drop the process-group variables this pytest process may hold.
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}


def _in_process(cmd: list[str], capsys) -> str:
    """Run `cmd` (a `python -m skillgpt.cli ...` line) in this process; only the run to be killed needs a process of
    its own, and each process start-up costs the suite seconds of imports."""
    from skillgpt.cli import main

    capsys.readouterr()
    assert main(cmd[3:]) == 0
    out = capsys.readouterr()
    return out.out + out.err


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _trained(ckpt: Path) -> dict:
    return {**load_file(str(ckpt / "projector.safetensors")),
            **load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))}


def test_sigkill_then_resume_matches_uninterrupted_run(trained_run, tmp_path: Path, capsys) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    _in_process(_command(trained_run, reference), capsys)

    proc = subprocess.Popen(_command(trained_run, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=ENV)
    deadline = time.time() + 240
    while not (killed / "checkpoint-2" / "COMPLETE").is_file():
        assert proc.poll() is None and time.time() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / f"checkpoint-{TOTAL_STEPS}").exists(), "the run finished before it could be killed"

    output = _in_process(_command(trained_run, killed), capsys)
    assert "resumed from" in output
    ref_log, log = _log(reference), _log(killed)
    assert [r["step"] for r in log] == list(range(1, TOTAL_STEPS + 1))  # every step exactly once
    for a, b in zip(ref_log, log):
        assert abs(a["loss"] - b["loss"]) <= 1e-6 and a["lr"] == pytest.approx(b["lr"])  # exact resume on CPU
    expected, got = _trained(reference / f"checkpoint-{TOTAL_STEPS}"), _trained(killed / f"checkpoint-{TOTAL_STEPS}")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] - got[name]).abs().max() < 1e-5, name
    assert not list(killed.glob(".tmp-*"))  # no half-written checkpoint left visible
    # resume state is safetensors + JSON only: nothing a loader would have to unpickle
    files = [p for p in (killed / f"checkpoint-{TOTAL_STEPS}").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".yaml", ".md", ""}, sorted(map(str, files))
    assert {p.name for p in files} >= {"optimizer.safetensors", "optimizer.json", "rng_rank0.safetensors"}
