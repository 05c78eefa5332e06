"""Shared fixtures: a tiny workspace (synthetic videos + tiny LLM) built once per test session."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class TinyWorkspace:
    root: Path
    data: Path
    llm: Path

    def overrides(self, stage: int, run: str, *extra: str) -> list[str]:
        """Overrides that point a stage config at this workspace (small, fast settings)."""
        data = [f"data.train={self.data}/captions_train.json"] if stage == 1 else [
            f"data.train={self.data}/skill_train.json", f"data.val={self.data}/skill_val.json",
            f"data.test={self.data}/skill_test.json",
        ]
        return [
            "preset=tiny", f"model.llm.path={self.llm}", *data,
            f"train.output_dir={self.root}/{run}/stage_{stage}",
            f"train.deepspeed_config={REPO}/dsconfig/stage_{stage}.json",
            "train.epochs=1", "train.micro_batch_size=4",
            *([f"train.init_from={self.root}/{run}/stage_1"] if stage == 2 else []),
            *extra,
        ]

    def config(self, stage: int, run: str, *extra: str):
        from skillgpt.config import load_config

        return load_config(REPO / "config" / f"stage_{stage}.yaml", self.overrides(stage, run, *extra))


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> TinyWorkspace:
    from skillgpt.cli import main

    root = tmp_path_factory.mktemp("tiny")
    data, llm = root / "data", root / "tiny-llm"
    assert main(["make-sample-data", "--out", str(data), "--per-level", "train=2,val=1,test=1"]) == 0
    assert main(["make-tiny-llm", "--data", str(data), "--out", str(llm), "--vocab-size", "512",
                 "--pretrain-steps", "5"]) == 0
    return TinyWorkspace(root, data, llm)


@dataclass
class TrainedRun:
    workspace: TinyWorkspace
    stage_1: Path
    stage_2: Path


@pytest.fixture(scope="session")
def trained_run(tiny_workspace: TinyWorkspace) -> TrainedRun:
    """Stage 1 then stage 2 of the tiny preset through the real CLI (a few optimizer steps each); stage 2
    also reports to an offline W&B run and validates after every step (tests/train/test_reporting.py)."""
    from skillgpt.cli import main

    watch = ["train.report_to=[tensorboard,wandb]", "train.eval_every=1"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        for stage in (1, 2):
            args = ["train", str(REPO / "config" / f"stage_{stage}.yaml"),
                    *tiny_workspace.overrides(stage, "e2e", *(watch if stage == 2 else []))]
            assert main(args) == 0
    run = tiny_workspace.root / "e2e"
    return TrainedRun(tiny_workspace, run / "stage_1", run / "stage_2")
