"""Scaling changes nothing about what is learned: stage 2 on 2 CPU processes (gloo) with ZeRO-2 (through
scripts/train.sh and the deepspeed launcher) and ZeRO-3 (torchrun) gives the per-step losses of a
1-process run with the same global batch (LoRA dropout on: its masks are seeded per micro-batch); the adapters load in one process and score alike; a 2-process
run resumes on 1 process."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
# This environment's tools first: a different `ninja` on PATH would rebuild DeepSpeed's cached C++ ops.
ENV["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}"
STEPS = 4  # 8 samples, global batch 4, 2 epochs


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _overrides(ws, out: Path, dsconfig: str) -> list[str]:
    keep = [o for o in ws.overrides(2, "mp", "train.init_from=null")
            if not o.startswith(("train.output_dir", "train.deepspeed_config", "train.epochs", "train.micro_batch"))]
    return [*keep, f"train.output_dir={out}", f"train.deepspeed_config={REPO}/dsconfig/{dsconfig}.json",
            "train.micro_batch_size=2", "train.global_batch_size=4", "train.epochs=2", "train.save_every=2",
            "train.keep_last=0", "model.llm.lora.dropout=0.3"]  # dropout masks must not depend on the split


def _run(cmd: list[str], **env: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=REPO, env={**ENV, **env})
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]


def _train(ws, out: Path, dsconfig: str, launcher: str) -> Path:
    args = ["train", str(REPO / "config" / "stage_2.yaml"), *_overrides(ws, out, dsconfig)]
    if launcher == "single":  # in this process: a process start-up costs seconds of imports
        from skillgpt.cli import main

        assert main(args) == 0
    elif launcher == "torchrun":
        _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _port(),
              "-m", "skillgpt.cli", *args])
    else:  # the deepspeed launcher, as users run it
        _run(["bash", "scripts/train.sh", "2", *args[2:]], DS_ARGS=f"--num_gpus 2 --master_port {_port()}")
    return out


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _weights(ckpt: Path) -> dict:
    return {**load_file(str(ckpt / "projector.safetensors")), **load_file(str(ckpt / "adapter" / "adapter_model.safetensors"))}


@pytest.fixture(scope="module")
def runs(tiny_workspace, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multiprocess")
    return {
        "single": _train(tiny_workspace, root / "single", "stage_2", "single"),
        "zero2": _train(tiny_workspace, root / "zero2", "stage_2", "deepspeed"),
        "zero3": _train(tiny_workspace, root / "zero3", "zero3", "torchrun"),
    }


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_two_processes_give_the_single_process_losses(runs, name):
    single, multi = _losses(runs["single"]), _losses(runs[name])
    assert len(single) == len(multi) == STEPS
    assert multi == pytest.approx(single, abs=1e-5)
    assert json.loads((runs[name] / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())["world_size"] == 2


@pytest.mark.parametrize("name", ["zero2", "zero3"])
def test_adapters_saved_by_two_processes_load_in_one_and_score_alike(runs, tiny_workspace, name):
    from skillgpt.inference.assistant import SkillAssistant

    one, two = _weights(runs["single"] / f"checkpoint-{STEPS}"), _weights(runs[name] / f"checkpoint-{STEPS}")
    assert one.keys() == two.keys() and all(v.numel() > 0 for v in two.values())  # whole tensors, not shards
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-3
    sample = json.loads((tiny_workspace.data / "skill_val.json").read_text())[0]
    scores = []
    for run in (runs["single"], runs[name]):
        assistant = SkillAssistant(run / f"checkpoint-{STEPS}", device="cpu")
        media = assistant.load(sample, tiny_workspace.data)
        scores.append(assistant.label_scores([media], "How skilled is this athlete?", ["Novice", "Late Expert"]))
    assert scores[1][0].tolist() == pytest.approx(scores[0][0].tolist(), abs=1e-3)


def test_a_two_process_run_resumes_on_one_process(runs, tiny_workspace, tmp_path):
    """The newest checkpoint is lost (as if killed before it); one process continues from the one before."""
    run = tmp_path / "zero2"
    shutil.copytree(runs["zero2"], run)
    shutil.rmtree(run / f"checkpoint-{STEPS}")
    _train(tiny_workspace, run, "stage_2", "single")
    assert _losses(run) == pytest.approx(_losses(runs["single"]), abs=1e-5)
    one, resumed = _weights(runs["single"] / f"checkpoint-{STEPS}"), _weights(run / f"checkpoint-{STEPS}")
    assert max(float((one[k] - resumed[k]).abs().max()) for k in one) < 1e-3
    assert json.loads((run / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())["world_size"] == 1


def test_changing_the_global_batch_on_resume_is_refused(runs, tiny_workspace, tmp_path):
    from skillgpt.config import load_config
    from skillgpt.train.loop import train

    run = tmp_path / "zero2"
    shutil.copytree(runs["zero2"], run)
    overrides = [o for o in _overrides(tiny_workspace, run, "stage_2") if not o.startswith("train.global_batch_size")]
    cfg = load_config(REPO / "config" / "stage_2.yaml", [*overrides, "train.grad_accum=1"])
    with pytest.raises(ValueError, match=r"global batch \(4 samples per step on 2 process\(es\), 2 now on 1"):
        train(cfg)
