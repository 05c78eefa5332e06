"""Self-contained, movable checkpoints: the recorded parent is used (never the newest one now), and a
checkpoint trained with working-directory-relative paths loads from any folder, after its run moved."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from skillgpt.checkpoint.delta import COMPLETE, list_checkpoints
from skillgpt.checkpoint.lineage import ParentError, checkpoint_config, record_lineage
from skillgpt.checkpoint.manifest import manifest_sha256, write_manifest
from skillgpt.cli import main
from skillgpt.config import load_config, load_resolved
from skillgpt.inference.assistant import SkillAssistant

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Runs:
    pristine: Path  # a repository-like tree: ckpt/{pretrained/tiny-llm,stage_1,stage_2,stage_2_full}, data/
    clip: str  # a test clip, relative to the tree
    scores: dict[str, dict[str, float]]  # run name -> rate() of `clip`, in the tree where it was trained


def _stage_2(name: str, *extra: str):
    """A one-step stage-2 config with paths relative to the working directory, as the repository's are."""
    return load_config(REPO / "config" / "stage_2.yaml", [
        "preset=tiny", "model.llm.path=ckpt/pretrained/tiny-llm", "data.train=data/skill_train.json",
        "data.val=data/skill_val.json", "data.test=data/skill_test.json", f"train.output_dir=ckpt/{name}",
        "train.init_from=ckpt/stage_1", f"train.deepspeed_config={REPO}/dsconfig/stage_2.json",
        "train.max_steps=1", "train.micro_batch_size=4", *extra])


def _rate(ckpt: Path, clip: Path, overrides: list[str] | None = None) -> dict[str, float]:
    assistant = SkillAssistant(ckpt, device="cpu", overrides=overrides)
    return assistant.rate(assistant.load_video(clip))


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory) -> Runs:
    """Stage 2 trained from the repository root with relative paths (LoRA on stage 1's full LLM: it needs
    its parent; and with a full LLM: it does not), then the tree renamed so no recorded path exists."""
    from skillgpt.train.loop import train

    base = tmp_path_factory.mktemp("lineage")
    tree = base / "repo"
    shutil.copytree(trained_run.workspace.data, tree / "data")
    shutil.copytree(trained_run.workspace.llm, tree / "ckpt" / "pretrained" / "tiny-llm")
    shutil.copytree(trained_run.stage_1, tree / "ckpt" / "stage_1")
    clip = str(sorted((tree / "data" / "videos" / "test").glob("*.mp4"))[0].relative_to(tree))
    cwd = os.getcwd()
    os.chdir(tree)
    try:
        scores = {}
        for name, extra in (("stage_2", ()), ("stage_2_full", ("freeze.llm=full",))):
            cfg = _stage_2(name, *extra)
            train(record_lineage(cfg, cfg.train.output_dir))
            scores[name] = _rate(tree / "ckpt" / name, Path(clip))
    finally:
        os.chdir(cwd)
    pristine = tree.rename(base / "pristine")
    return Runs(pristine, clip, scores)


@pytest.fixture
def moved(runs: Runs, tmp_path: Path, monkeypatch) -> Path:
    """A copy of the tree at a new place, used from an unrelated working directory."""
    tree = tmp_path / "moved"
    shutil.copytree(runs.pristine, tree)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    return tree


def _close(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    torch.testing.assert_close(torch.tensor(list(a.values())), torch.tensor(list(b.values())), rtol=1e-5, atol=1e-6)


def test_lineage_is_recorded(runs: Runs) -> None:
    cfg = load_resolved(list_checkpoints(runs.pristine / "ckpt" / "stage_2")[-1] / "config.yaml")
    parent = Path(cfg.train.init_from)
    assert parent.name == list_checkpoints(runs.pristine / "ckpt" / "stage_1")[-1].name  # the concrete one
    assert parent.parent == runs.pristine.with_name("repo") / "ckpt" / "stage_1"  # absolute, where it was
    assert cfg.train.parent.manifest_sha256 == manifest_sha256(runs.pristine / "ckpt" / "stage_1" / parent.name)
    assert cfg.train.parent.parts == ["projector", "llm"]  # the tiny stage 1 trains the LLM fully
    assert cfg.model.llm.path == str(runs.pristine.with_name("repo") / "ckpt" / "pretrained" / "tiny-llm")
    assert cfg.data.test == str(runs.pristine.with_name("repo") / "data" / "skill_test.json")


def test_moved_checkpoint_loads_from_another_working_directory(runs: Runs, moved: Path) -> None:
    ckpt = moved / "ckpt" / "stage_2"
    _close(_rate(ckpt, moved / runs.clip), runs.scores["stage_2"])
    cfg = checkpoint_config(list_checkpoints(ckpt)[-1])  # every input found in the moved tree
    assert Path(cfg.model.llm.path) == moved / "ckpt" / "pretrained" / "tiny-llm"
    assert Path(cfg.train.init_from).parent == moved / "ckpt" / "stage_1"
    assert Path(cfg.data.test) == moved / "data" / "skill_test.json"


def test_cli_infer_from_another_working_directory(runs: Runs, moved: Path, capsys) -> None:
    code = main(["infer", "--ckpt", str(moved / "ckpt" / "stage_2"), "--video", str(moved / runs.clip), "--json",
                 "--max-new-tokens", "2", "How good is this?"])
    out = capsys.readouterr()
    assert code == 0, out.err
    _close(json.loads(out.out)["probabilities"], runs.scores["stage_2"])


def test_cli_eval_of_a_moved_tree_finds_its_test_split(moved: Path, tmp_path: Path, capsys) -> None:
    code = main(["eval", "--ckpt", str(moved / "ckpt" / "stage_2"), "--limit", "2", "--no-generate",
                 "--out", str(tmp_path / "eval")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "eval" / "results.json").is_file()


def test_missing_parent_is_named_with_the_fix(runs: Runs, moved: Path, tmp_path: Path, capsys) -> None:
    shutil.move(moved / "ckpt" / "stage_1", tmp_path / "stage_1_new")
    ckpt = moved / "ckpt" / "stage_2"
    with pytest.raises(ParentError, match="--init-from PATH") as err:
        SkillAssistant(ckpt, device="cpu")
    assert "train.init_from" in str(err.value) and "stage_1" in str(err.value)
    # the run folder at its new place: its checkpoint with the recorded hash is used
    _close(_rate(ckpt, moved / runs.clip, [f"train.init_from={tmp_path / 'stage_1_new'}"]), runs.scores["stage_2"])
    code = main(["infer", "--ckpt", str(ckpt), "--video", str(moved / runs.clip), "--json", "--max-new-tokens", "2",
                 "--init-from", str(tmp_path / "stage_1_new"), "Rate it."])
    out = capsys.readouterr()
    assert code == 0, out.err
    _close(json.loads(out.out)["probabilities"], runs.scores["stage_2"])


def test_parent_not_needed_when_the_checkpoint_replaces_it(runs: Runs, moved: Path) -> None:
    shutil.rmtree(moved / "ckpt" / "stage_1")  # stage_2_full retrained the projector and the whole LLM
    ckpt = moved / "ckpt" / "stage_2_full"
    assert checkpoint_config(list_checkpoints(ckpt)[-1]).train.init_from is None
    _close(_rate(ckpt, moved / runs.clip), runs.scores["stage_2_full"])


def _newer_parent(stage_1: Path) -> Path:
    """A newer complete stage-1 checkpoint with other LLM weights (what re-running stage 1 leaves)."""
    newest = list_checkpoints(stage_1)[-1]
    newer = stage_1 / "checkpoint-999"
    shutil.copytree(newest, newer)
    for f in (newer / "llm").glob("*.safetensors"):
        save_file({k: v * 1.5 if v.dim() == 2 else v for k, v in load_file(str(f)).items()}, str(f),
                  metadata={"format": "pt"})
    (newer / "MANIFEST.json").unlink()
    write_manifest(newer)
    return newer


def test_newer_parent_checkpoint_is_not_picked_up(runs: Runs, moved: Path) -> None:
    newer = _newer_parent(moved / "ckpt" / "stage_1")
    assert list_checkpoints(moved / "ckpt" / "stage_1")[-1] == newer and (newer / COMPLETE).is_file()
    _close(_rate(moved / "ckpt" / "stage_2", moved / runs.clip), runs.scores["stage_2"])
    # the newer checkpoint really differs: loaded as the parent, the scores change
    with pytest.warns(UserWarning, match="no recorded parent hash"):
        forced = _rate(moved / "ckpt" / "stage_2", moved / runs.clip, [f"train.init_from={newer}",
                                                                      "train.parent.manifest_sha256=null"])
    assert max(abs(forced[k] - v) for k, v in runs.scores["stage_2"].items()) > 1e-4


def test_resume_keeps_the_recorded_parent(runs: Runs, moved: Path, monkeypatch) -> None:
    _newer_parent(moved / "ckpt" / "stage_1")
    monkeypatch.chdir(moved)
    cfg = _stage_2("stage_2")  # the same command again: train.init_from is the stage-1 run folder
    again = record_lineage(cfg, cfg.train.output_dir)
    recorded = load_resolved(list_checkpoints(moved / "ckpt" / "stage_2")[-1] / "config.yaml").train
    assert Path(again.train.init_from).name == Path(recorded.init_from).name != "checkpoint-999"
    assert Path(again.train.init_from).parent == moved / "ckpt" / "stage_1"  # found through the given folder
    assert again.train.parent == recorded.parent
    assert record_lineage(again, cfg.train.output_dir) == again  # idempotent


def test_changed_parent_is_refused(runs: Runs, moved: Path) -> None:
    stage_1 = moved / "ckpt" / "stage_1"
    parent = Path(checkpoint_config(list_checkpoints(moved / "ckpt" / "stage_2")[-1]).train.init_from)
    newer = _newer_parent(stage_1)
    shutil.rmtree(parent)
    shutil.move(newer, parent)  # other weights under the recorded name
    with pytest.raises(ParentError, match="changed"):
        SkillAssistant(moved / "ckpt" / "stage_2", device="cpu")


def test_missing_base_model_is_named_with_the_flag(runs: Runs, moved: Path, tmp_path: Path, capsys) -> None:
    shutil.move(moved / "ckpt" / "pretrained" / "tiny-llm", tmp_path / "llm_new")
    ckpt = moved / "ckpt" / "stage_2"
    args = ["infer", "--ckpt", str(ckpt), "--video", str(moved / runs.clip), "--json", "--max-new-tokens", "2", "Rate."]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "model.llm.path" in err and "--base-llm PATH" in err
    assert main([*args, "--base-llm", str(tmp_path / "llm_new")]) == 0
    _close(json.loads(capsys.readouterr().out)["probabilities"], runs.scores["stage_2"])


def test_candidate_order(tmp_path: Path) -> None:
    """Recorded absolute value, then the same place relative to the moved run; relative (older) values: the
    working directory, then each folder above the checkpoint."""
    from skillgpt.checkpoint.lineage import candidates

    ckpt = tmp_path / "new" / "ckpt" / "stage_2" / "checkpoint-3"
    assert candidates("/old/ckpt/pretrained/llm", "/old/ckpt/stage_2", ckpt) == [
        Path("/old/ckpt/pretrained/llm"), tmp_path / "new" / "ckpt" / "pretrained" / "llm"]
    found = candidates("ckpt/pretrained/llm", "ckpt/stage_2", ckpt)
    assert found[0] == Path("ckpt/pretrained/llm") and tmp_path / "new" / "ckpt" / "pretrained" / "llm" in found


def test_moved_qformer_and_processor_folder_are_found(tmp_path: Path) -> None:
    """Every file a model reads is a model path: the Q-Former checkpoint (MiniGPT-4 imports) and the pixel
    rules folder (data.video.processor) follow a moved run; a missing one is named with its key."""
    from skillgpt.checkpoint.lineage import _resolve_paths

    cfg = load_config(REPO / "config" / "stage_2.yaml")
    cfg.train.output_dir = "/old/runs/stage_2"
    cfg.model.encoder.qformer = "/old/runs/weights/qformer.pth"
    cfg.data.video.processor = "/old/runs/weights/clip"
    new = tmp_path / "new" / "runs"
    (new / "weights" / "clip").mkdir(parents=True)
    (new / "weights" / "qformer.pth").write_bytes(b"")
    ckpt = new / "stage_2" / "checkpoint-3"
    for key in ("model.llm.path", "model.encoder.checkpoint", "model.encoder.path"):  # not under test here
        head, _, last = key.rpartition(".")
        obj = cfg
        for part in head.split("."):
            obj = getattr(obj, part)
        setattr(obj, last, None)
    _resolve_paths(cfg, ckpt, set())
    assert cfg.model.encoder.qformer == str(new / "weights" / "qformer.pth")
    assert cfg.data.video.processor == str(new / "weights" / "clip")
    (new / "weights" / "qformer.pth").unlink()
    cfg.model.encoder.qformer = "/old/runs/weights/qformer.pth"
    with pytest.raises(FileNotFoundError, match=r"model\.encoder\.qformer"):
        _resolve_paths(cfg, ckpt, set())
