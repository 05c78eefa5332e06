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
