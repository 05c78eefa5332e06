"""`scripts/train.sh STAGE` runs a stage through the DeepSpeed launcher (here: one CPU process)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}


def test_train_script_launches_stage_with_deepspeed(tiny_workspace, tmp_path: Path) -> None:
    out = tmp_path / "launched"
    overrides = [o for o in tiny_workspace.overrides(1, "launched") if not o.startswith("train.output_dir")]
    env = {**ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}"}
    done = subprocess.run(["bash", "scripts/train.sh", "1", *overrides, f"train.output_dir={out}", "train.max_steps=1"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "checkpoint-1" / "COMPLETE").is_file() and (out / "config.yaml").is_file()


def test_train_script_rejects_unknown_stage() -> None:
    done = subprocess.run(["bash", "scripts/train.sh", "7"], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert done.returncode == 2 and "config/stage_7.yaml not found" in done.stderr


def test_train_script_from_another_folder_keeps_paths_there(tmp_path: Path) -> None:
    """Run from elsewhere, the stage config is the repository's but output_dir (and so resuming), data and
    init_from resolve in the caller's folder: the repository's own ckpt/ run is never continued."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "deepspeed").write_text(  # stands in for the launcher: reports where and what it would train
        f"#!/bin/sh\nshift\nexec {sys.executable} - \"$@\" <<'PY'\n"
        "import os, sys\nfrom pathlib import Path\nfrom skillgpt.config import load_config\n"
        "args = sys.argv[1:]\nassert args[:2] == ['--module', 'skillgpt.cli'] and args[2] == 'train', args\n"
        "cfg = load_config(args[3], args[4:])\n"
        "print(os.getcwd(), Path(cfg.train.output_dir).resolve(), cfg.train.deepspeed_config, args[3], sep='|')\nPY\n")
    (fake / "deepspeed").chmod(0o755)
    caller = tmp_path / "elsewhere"
    caller.mkdir()
    env = {**ENV, "PATH": f"{fake}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{ENV.get('PATH', '')}",
           "PYTHONPATH": str(REPO / "code")}
    done = subprocess.run(["bash", str(REPO / "scripts" / "train.sh"), "2", "preset=tiny"], cwd=caller, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    cwd, output_dir, ds_config, config = done.stdout.strip().splitlines()[-1].split("|")
    assert Path(cwd) == caller and Path(output_dir) == caller / "ckpt" / "tiny" / "stage_2"
    assert Path(ds_config) == REPO / "dsconfig" / "stage_2.json" and Path(config) == REPO / "config" / "stage_2.yaml"
    assert "paths are relative to" in done.stderr
