"""Through the public entry point (`skillgpt infer`), the tensor that reaches the frozen encoder equals what
ImageBind's own `load_and_transform_video_data` gives for the same clip (golden fixtures in
tests/fixtures/preprocessing/, made by the reference; see its README).

The checkpoint is the tiny session fixture's; its data settings are replaced by the `vicuna-7b-v0` preset's
`data.video` section (read from config/model/vicuna-7b-v0.yaml) through `--set`, so what is checked is the
path a real preset's `skillgpt infer` takes. `SkillGPT.encode` is wrapped to capture its input and stop
(the architecture check is lifted: the tiny checkpoint was trained on another clip count).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from skillgpt.cli import main
from skillgpt.models.skill_model import SkillGPT

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "preprocessing"
CLIP = "ntsc_2997_320x240_aac.mp4"  # 29.97 fps, 4.57 s: clip starts and float frame indices both matter
ROW = 111


class Captured(Exception):
    """Raised by the wrapped encoder once it has seen its input."""


def _preset_video_settings() -> list[str]:
    preset = yaml.safe_load((REPO / "config" / "model" / "vicuna-7b-v0.yaml").read_text())
    return [f"data.video.{k}={v}" for k, v in preset["data"]["video"].items() if not isinstance(v, (list, dict))]


@pytest.mark.parametrize("crops", [1, 3])
def test_infer_feeds_the_encoder_the_reference_pixels(crops, trained_run, monkeypatch):
    seen = []

    def capture(self, kind, pixels):
        seen.append((kind, pixels.detach().float().cpu().numpy()))
        raise Captured

    monkeypatch.setattr(SkillGPT, "encode", capture)
    # the tiny checkpoint was trained on 9 clips; the preset's 5 only change how many clips reach the encoder
    import skillgpt.checkpoint.delta as delta

    monkeypatch.setattr(delta, "check_architecture", lambda *a, **k: None)
    overrides = [a for s in _preset_video_settings() + [f"data.video.num_crops={crops}"] for a in ("--set", s)]
    try:
        main(["infer", "--ckpt", str(trained_run.stage_2), "--video", str(FIXTURES / CLIP), *overrides,
              "What is the proficiency level of this athlete?"])
    except Captured:
        pass
    assert seen and seen[0][0] == "video", f"the encoder was not reached with a video: {[k for k, _ in seen]}"
    x = seen[0][1][0]  # [clips * crops, C, T, 224, 224], clip-major
    ref = np.load(FIXTURES / CLIP.replace(".mp4", ".video.npz"))  # the reference's 5 clips x 3 crops
    ref_rows = ref["row"] if crops == 3 else ref["row"][1::3]  # one crop: the reference's centre crop
    assert x.shape == (5 * crops, 3, 2, 224, 224), x.shape
    diff = np.abs(x[..., ROW, :] - ref_rows)
    assert diff.max() <= 1e-5, f"row {ROW} of the encoder input differs from the reference by up to {diff.max():.2e}"
    if crops == 3:
        plane_sum = x.astype(np.float64).sum(axis=(-1, -2))
        assert np.abs(plane_sum - ref["sum"]).max() / (224 * 224) <= 1e-5
