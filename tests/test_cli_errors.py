"""Bad input fails fast with exit status 2 and a message naming the culprit."""
from __future__ import annotations

import json
from pathlib import Path

from skillgpt.cli import main

REPO = Path(__file__).resolve().parents[1]


def _train(workspace, capsys, *extra: str, stage: int = 2) -> tuple[int, str]:
    code = main(["train", str(REPO / "config" / f"stage_{stage}.yaml"),
                 *workspace.overrides(stage, "errors", "train.init_from=null"), *extra])
    return code, capsys.readouterr().err


def test_misspelled_config_key_is_named(tiny_workspace, capsys) -> None:
    code, err = _train(tiny_workspace, capsys, "train.learning_rate=1e-4")
    assert code == 2 and "train.learning_rate" in err


def test_wrong_type_is_named(tiny_workspace, capsys) -> None:
    code, err = _train(tiny_workspace, capsys, "train.epochs=three")
    assert code == 2 and "train.epochs" in err


def test_unknown_key_in_a_yaml_file_is_named(tiny_workspace, tmp_path, capsys) -> None:
    bad = tmp_path / "stage_x.yaml"
    bad.write_text((REPO / "config" / "stage_2.yaml").read_text().replace("freeze:", "freeze:\n  projektor: full", 1))
    code = main(["train", str(bad), *tiny_workspace.overrides(2, "errors")])
    err = capsys.readouterr().err
    assert code == 2 and "freeze.projektor" in err


def test_missing_video_is_named(tiny_workspace, tmp_path, capsys) -> None:
    samples = json.loads((tiny_workspace.data / "skill_train.json").read_text())
    samples[1]["video"] = "videos/train/does_not_exist.mp4"
    bad = tiny_workspace.data / "skill_missing_video.json"  # next to the videos: paths resolve from here
    bad.write_text(json.dumps(samples))
    code, err = _train(tiny_workspace, capsys, f"data.train={bad}")
    assert code == 2 and "does_not_exist.mp4" in err and samples[1]["id"] in err and str(bad) in err


def test_placeholder_count_mismatch_is_named(tiny_workspace, capsys) -> None:
    samples = json.loads((tiny_workspace.data / "skill_train.json").read_text())
    samples[2]["conversations"][2]["value"] += " <video>"  # two placeholders, one video
    bad = tiny_workspace.data / "skill_two_placeholders.json"
    bad.write_text(json.dumps(samples))
    code, err = _train(tiny_workspace, capsys, f"data.train={bad}")
    assert code == 2 and samples[2]["id"] in err and "placeholder" in err and str(bad) in err


def test_missing_llm_folder_is_named(tiny_workspace, tmp_path, capsys) -> None:
    code, err = _train(tiny_workspace, capsys, f"model.llm.path={tmp_path}/no-such-llm")
    assert code == 2 and "no-such-llm" in err


def test_every_checkpoint_command_takes_the_location_flags() -> None:
    """infer, eval, chat and demo accept --base-llm and --init-from (a checkpoint whose base model or parent
    moved); the error for a missing one names them (tests/checkpoint/test_lineage.py)."""
    from skillgpt.checkpoint.flags import location_overrides
    from skillgpt.cli import build_parser

    parser = build_parser()
    for command in ("infer", "eval", "chat", "demo"):
        extra = ["q"] if command == "infer" else []
        args = parser.parse_args([command, "--ckpt", "C", "--base-llm", "L", "--init-from", "P", *extra])
        assert location_overrides(args)[:2] == ["model.llm.path=L", "train.init_from=P"], command
    args = parser.parse_args(["infer", "--ckpt", "C", "--set", "model.encoder.checkpoint=E", "q"])
    assert location_overrides(args) == ["model.encoder.checkpoint=E"]
