"""`skillgpt infer --videos ... --out ...`: many clips, one model load, a row per clip, errors recorded."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

from skillgpt.cli import main
from skillgpt.inference.batch import FEEDBACK_QUESTION, collect_clips

QUESTION = "What is the proficiency level of this athlete?"


@pytest.fixture(scope="module")
def assistant(trained_run):
    from skillgpt.inference.assistant import SkillAssistant

    return SkillAssistant(trained_run.stage_2, device="cpu")


@pytest.fixture(scope="module")
def clip_folder(trained_run, tmp_path_factory) -> Path:
    """10 clips of the tiny workspace plus one broken file (text named .mp4); a non-video file is ignored."""
    videos = sorted((trained_run.workspace.data / "videos").rglob("*.mp4"))[:10]
    assert len(videos) == 10
    folder = tmp_path_factory.mktemp("clips")
    for i, video in enumerate(videos):
        shutil.copy(video, folder / f"clip_{i:02d}.mp4")
    (folder / "clip_05b.mp4").write_text("not a video\n")
    (folder / "notes.txt").write_text("ignored\n")
    return folder


def test_a_folder_of_ten_clips_and_a_broken_one_in_one_process(trained_run, assistant, clip_folder, tmp_path,
                                                               capsys) -> None:
    out = tmp_path / "results.jsonl"
    argv = ["infer", "--ckpt", str(trained_run.stage_2), "--videos", str(clip_folder), "--out", str(out),
            "--max-new-tokens", "6", "--device", "cpu"]
    assert main(argv) == 0
    assert f"11 clips rated, 1 failed: {out}" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == sorted(p.name for p in clip_folder.glob("*.mp4"))
    labels = list(assistant.cfg.eval.labels)
    for row in rows:
        if row["path"].endswith("clip_05b.mp4"):  # recorded, and the run went on
            assert row["error"] and "clip_05b.mp4" in row["error"] and row["label"] is None
            assert row["probabilities"] is None and row["answer"] is None and row["feedback"] is None
            continue
        assert row["error"] is None and list(row["probabilities"]) == labels
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
        media = assistant.encode_media(assistant.load_video(row["path"]))  # the same model, one clip at a time
        expected = assistant.rate(media)
        assert all(abs(row["probabilities"][k] - expected[k]) < 1e-5 for k in labels)
        assert isinstance(row["answer"], str) and isinstance(row["feedback"], str)
        if row["path"].endswith(("clip_00.mp4", "clip_09.mp4")):  # free text again for two clips (generation is slow)
            assert row["answer"] == assistant.ask(QUESTION, media, max_new_tokens=6)
            assert row["feedback"] == assistant.ask(FEEDBACK_QUESTION, media, max_new_tokens=6)


def test_a_list_file_and_a_data_json_as_csv(trained_run, assistant, clip_folder, tmp_path) -> None:
    listing = tmp_path / "clips.txt"  # relative paths resolve from the list's folder
    rel = Path(os.path.relpath(clip_folder, tmp_path))
    listing.write_text(f"# two clips\n{rel / 'clip_00.mp4'}\n\n{rel / 'missing.mp4'}\n")
    clips = collect_clips(listing)
    assert [c.path for c in clips] == [tmp_path / rel / "clip_00.mp4", tmp_path / rel / "missing.mp4"]

    data = json.loads((trained_run.workspace.data / "skill_test.json").read_text())[:2]
    (trained_run.workspace.data / "two.json").write_text(json.dumps(data))
    out = tmp_path / "out" / "results.csv"
    assert main(["infer", "--ckpt", str(trained_run.stage_2), "--videos", str(trained_run.workspace.data / "two.json"),
                 "--out", str(out), "--max-new-tokens", "4", "--feedback-question", "", "What level?"]) == 0
    rows = list(csv.DictReader(out.open()))
    labels = list(assistant.cfg.eval.labels)
    assert [r["id"] for r in rows] == [str(d["id"]) for d in data] and all(r["error"] == "" for r in rows)
    for row, sample in zip(rows, data):
        probs = {k: float(row[f"p({k})"]) for k in labels}
        assert row["label"] == max(probs, key=probs.get) and row["feedback"] == ""
        media = assistant.encode_media(assistant.load_video(trained_run.workspace.data / sample["video"]))
        assert row["answer"] == assistant.ask("What level?", media, max_new_tokens=4)


def test_bad_batch_inputs(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no video files"):
        collect_clips(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        collect_clips(tmp_path / "nope.txt")
    (tmp_path / "bad.json").write_text('[{"id": 1}]')
    with pytest.raises(ValueError, match="sample 0 has no 'video'"):
        collect_clips(tmp_path / "bad.json")
