"""`skillgpt data validate` decodes a video the way training samples it: inside the sample's MVBench
segment (``start``/``end``), so a segment past the video's end is reported, naming sample and field."""
from __future__ import annotations

import json
from pathlib import Path

from skillgpt.data.validate import validate_config


def test_a_segment_past_the_videos_end_is_reported(tiny_workspace, tmp_path: Path) -> None:
    samples = json.loads((tiny_workspace.data / "skill_train.json").read_text())[:3]
    for s in samples:
        s["video"] = str(tiny_workspace.data / s["video"])
    samples[0] |= {"start": 0.0, "end": 1.0}  # inside the video: fine
    samples[1] |= {"start": 1000.0, "end": 1001.0}  # the same kind of file, but far past its end
    samples[1]["video"] = samples[0]["video"]  # one file, two segments: each is decoded
    train = tmp_path / "train.json"
    train.write_text(json.dumps(samples))
    cfg = tiny_workspace.config(2, "validate-segments", f"data.train={train}", "data.val=null", "data.test=null")
    report = validate_config(cfg, ["train"], progress=False, use_cache=False)
    problems = report.splits[0].errors
    assert [(p.sample, p.field) for p in problems] == [(samples[1]["id"], "video")], report.format()
    assert "segment starts at 1000.0s, at or after the video's end" in problems[0].message
