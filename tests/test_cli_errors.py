"""Bad input fails fast with exit status 2 and a message naming the culprit."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


# ---- issue 21: every input error is one line on stderr with exit status 2 -----------------------------
QUESTION = "What is the proficiency level of this athlete?"


def _fails(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; it must end with status 2 (returned or argparse's SystemExit) and one line."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and re.fullmatch(r"skillgpt \S+", capsys.readouterr().out.strip())


def test_bad_inputs_fail_before_the_model_loads(tmp_path, capsys) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(64))
    text = tmp_path / "notes.mp4"
    text.write_text("these are my notes, not a video\n")
    infer = ["infer", "--ckpt", str(tmp_path)]
    assert "--device banana: unknown device" in _fails(capsys, [*infer, "--device", "banana", "--video", str(clip), QUESTION])
    assert f"--video {text}: is a text file" in _fails(capsys, [*infer, "--video", str(text), QUESTION])
    assert f"--video {tmp_path}: is a folder" in _fails(capsys, [*infer, "--video", str(tmp_path), QUESTION])
    assert "--video /no/such.mp4: file not found" in _fails(capsys, [*infer, "--video", "/no/such.mp4", QUESTION])
    assert "the question is missing" in _fails(capsys, [*infer, "--video", str(clip)])
    assert "--ckpt /no/such/run: not found" in _fails(capsys, ["infer", "--ckpt", "/no/such/run", QUESTION])
    assert "--temperature: expected a number >= 0, got -1" in _fails(capsys, [*infer, "--temperature", "-1", QUESTION])
    assert "--top-p: expected a number in (0, 1], got 5" in _fails(capsys, [*infer, "--top-p", "5", QUESTION])
    assert "--max-new-tokens: expected a whole number >= 1" in _fails(capsys, [*infer, "--max-new-tokens", "0", QUESTION])
    assert "needs --out" in _fails(capsys, [*infer, "--videos", str(tmp_path)])
    assert "--out x.txt: expected a .jsonl or .csv" in _fails(capsys, [*infer, "--videos", str(tmp_path), "--out", "x.txt"])
    assert "--video /missing.mp4: file not found" in _fails(capsys, ["chat", "--ckpt", str(tmp_path), "--video", "/missing.mp4"])
    assert "--top-p" in _fails(capsys, ["chat", "--ckpt", str(tmp_path), "--top-p", "0"])
    assert "--device banana" in _fails(capsys, ["chat", "--ckpt", str(tmp_path), "--device", "banana"])
    assert "give every view as VIEW=FILE" in _fails(capsys, [*infer, "--video", f"ego={clip}", "--video", str(clip), QUESTION])
    assert "view 'ego' is given twice" in _fails(capsys, [*infer, "--video", f"ego={clip}", "--video", f"ego={clip}", QUESTION])
    assert f"--video {tmp_path}/x=y.mp4: file not found" in _fails(capsys, [*infer, "--video", f"{tmp_path}/x=y.mp4", QUESTION])


def test_video_values_split_views_only_where_meant(tmp_path, monkeypatch) -> None:
    from skillgpt.inference.inputs import split_view, video_values

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a=b.mp4").write_bytes(b"\0")
    assert split_view("a=b.mp4") == (None, "a=b.mp4")  # an existing file keeps its '='
    assert split_view("clips/x=y.mp4") == (None, "clips/x=y.mp4")  # 'clips/x' is no view name
    assert split_view("exo1=clips/x=y.mp4") == ("exo1", "clips/x=y.mp4")  # split at the first '=' only
    assert video_values(["ego=e.mp4", "exo1=x.mp4"]) == {"ego": "e.mp4", "exo1": "x.mp4"}
    assert video_values(["a=b.mp4", "c.mp4"]) == ["a=b.mp4", "c.mp4"]


def test_demo_on_a_busy_port_fails_before_the_model_loads(tmp_path, capsys) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = _fails(capsys, ["demo", "--ckpt", str(tmp_path), "--port", str(port)])  # tmp_path: no model in it
    assert f"127.0.0.1:{port}" in err and "--port" in err and "\n" not in err.strip()
    assert "--host no-such-host.invalid" in _fails(capsys, ["demo", "--ckpt", str(tmp_path), "--host", "no-such-host.invalid"])


def test_errors_after_loading_are_one_line(trained_run, capsys) -> None:
    clip = sorted((trained_run.workspace.data / "videos" / "test").glob("*.mp4"))[0]
    infer = ["infer", "--ckpt", str(trained_run.stage_2), "--video", str(clip)]
    err = _fails(capsys, [*infer, "<video> <video> Which of the two is better?"])
    assert "2 <video> placeholders but 1 video" in err
    import torch

    if not torch.cuda.is_available():
        assert "--device cuda: no CUDA GPU is available here" in _fails(capsys, [*infer, "--device", "cuda", QUESTION])


def test_stage_2_without_stage_1_says_so_before_anything_is_written(tiny_workspace, capsys) -> None:
    code = main(["train", str(REPO / "config" / "stage_2.yaml"), *tiny_workspace.overrides(2, "no-stage-1")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "run stage 1 first" in err and "train.init_from" in err and "\n" not in err
    assert not (tiny_workspace.root / "no-stage-1").exists()  # no stray config.yaml


def test_every_option_says_what_it_does_and_its_default() -> None:
    from skillgpt.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("infer", "chat", "demo", "train", "eval", "make-sample-data", "make-tiny-llm", "cache-features"):
        command = sub.choices[name]
        for action in command._actions:
            if not action.option_strings or action.help in (argparse.SUPPRESS,) or action.dest == "help":
                continue
            assert action.help, f"skillgpt {name} {action.option_strings[0]}: no description"
            shown = command.formatter_class(name)._get_help_string(action)
            assert action.required or "default" in shown.lower(), f"skillgpt {name} {action.option_strings[0]}: {shown}"


def test_early_errors_import_no_torch_and_take_seconds() -> None:
    """One fresh interpreter: bad paths, values and config keys are reported without importing torch."""
    script = (
        "import sys, time\nfrom skillgpt.cli import build_parser, main\nstart = time.perf_counter()\n"
        "build_parser()\n"  # every command, as `skillgpt --help` shows them
        "codes = [main(['infer', '--ckpt', '/no/run', 'q']), main(['infer', '--ckpt', '.', '--video', '/no.mp4', 'q']),"
        f" main(['train', {str(REPO / 'config' / 'stage_2.yaml')!r}, 'preset=tiny', 'train.learning_rate=1'])]\n"
        "print(codes, 'torch' in sys.modules, 'peft' in sys.modules, time.perf_counter() - start)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO / "code")})
    assert done.stdout.startswith("[2, 2, 2] False False"), done.stdout + done.stderr
    assert "train.learning_rate" in done.stderr and done.stderr.count("\n") == 3


def test_third_party_noise_is_hidden_unless_verbose() -> None:
    import io
    import logging

    from skillgpt.console import NoiseFilteredStream, quiet_libraries

    deepspeed = logging.getLogger("DeepSpeed")
    probe = deepspeed.makeRecord("DeepSpeed", logging.WARNING, __file__, 1, "Setting accelerator to CPU.", (), None)
    try:
        quiet_libraries(verbose=True)
        assert deepspeed.filter(probe)
        assert logging.getLogger("bitsandbytes.backends.cpu.ops").isEnabledFor(logging.WARNING)
    finally:
        quiet_libraries(verbose=False)  # the default every command starts with
    assert not deepspeed.filter(probe)
    assert not logging.getLogger("bitsandbytes.backends.cpu.ops").isEnabledFor(logging.WARNING)
    assert not logging.getLogger("torch.utils.cpp_extension").isEnabledFor(logging.WARNING)
    out = io.StringIO()
    stream = NoiseFilteredStream(out)
    print("DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully", file=stream)
    print("checkpoint: run/checkpoint-2", file=stream, flush=True)
    assert out.getvalue() == "checkpoint: run/checkpoint-2\n"
