"""The flaw metric stays at chance on motion-free clips (one repeated frame per clip).

A probe reads each beat's kind (clean, hold, slip, extra loop) from the clips exactly as the
`tiny-feedback` preset samples them (``load_video`` with the preset's video settings), writes the
feedback sentence for the predicted flaws and is scored by the eval's flaw metric. On the real clips it
gets most flaw mixes right; on the same clips through ``freeze_motion`` (the eval's motion-free
baseline) it must fall to the majority-mix level, so the flaws live in motion only.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from skillgpt.config.schema import VideoConfig
from skillgpt.data.synthetic import BEAT_S, FLAW_TYPES, feedback, make_sample_data
from skillgpt.data.video import clip_starts, load_video
from skillgpt.eval.flaws import flaw_record, flaw_stats, majority_mix, majority_mix_stats
from skillgpt.eval.run import freeze_motion

REPO = Path(__file__).resolve().parents[2]
KINDS = ["clean", *FLAW_TYPES]


def _video_config() -> VideoConfig:
    preset = yaml.safe_load((REPO / "config/model/tiny-feedback.yaml").read_text())
    return VideoConfig(**preset["data"]["video"])


@pytest.fixture(scope="module")
def probe_set(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Per test video of a small synthetic set: the sample and its beat features from the clips as the
    preset samples them, real and motion-free (``freeze_motion``)."""
    root = tmp_path_factory.mktemp("motion_free")
    make_sample_data(root, seed=3, per_level={"test": 8}, workers=2, progress=False)
    cfg = _video_config()
    beats_of = [int(float(s) // BEAT_S) for s in clip_starts(72, 8, cfg)]  # 9 s at 8 fps
    out: dict = {"samples": [], "real": [], "frozen": []}
    for s in json.loads((root / "skill_test.json").read_text()):
        clips = load_video(root / s["video"], cfg)
        (frozen,) = (p for _, p in freeze_motion([("video", clips)]))
        out["samples"].append(s)
        out["real"].append(_beat_features(clips, beats_of, s["beats"]))
        out["frozen"].append(_beat_features(frozen, beats_of, s["beats"]))
    return out


def _beat_features(clips: torch.Tensor, beats_of: list[int], beats: int) -> np.ndarray:
    """Per beat: the object's travel in each of its clips (first to last frame, over the path's extent) and
    the cosine between the two travels (a slip goes back, then forward). The object is where a frame
    differs from the video's median frame."""
    s, c, t, h, w = clips.shape
    background = clips.permute(0, 2, 1, 3, 4).reshape(s * t, c, h, w).median(0).values  # [C, H, W]
    mass = (clips - background[None, :, None]).abs().sum(1)  # [S, T, H, W]
    mass = torch.clamp(mass - 0.5 * mass.amax((-1, -2), keepdim=True), min=0) + 1e-6
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    pos = torch.stack([(mass * xx).sum((-1, -2)), (mass * yy).sum((-1, -2))], -1) / mass.sum((-1, -2))[..., None]
    extent = float((pos.amax((0, 1)) - pos.amin((0, 1))).max()) + 1e-6
    travel = (pos[:, -1] - pos[:, 0]) / extent  # [S, 2]
    feats = []
    for beat in range(beats):
        a, b = (travel[i] for i, of in enumerate(beats_of) if of == beat)
        cos = float(a @ b / (a.norm() * b.norm() + 1e-3))
        feats.append([float(a.norm()), float(b.norm()), cos])
    return np.array(feats)


def _beat_kinds(sample: dict) -> list[int]:
    kinds = [0] * sample["beats"]
    for f in sample["flaws"]:
        kinds[f["beat"]] = KINDS.index(f["type"])
    return kinds


def _probe_flaw_exact(probe_set: dict, which: str) -> tuple[float, float, list[dict]]:
    """Nearest-centroid beat kinds fitted on half the videos, scored on the other half by the flaw metric;
    returns (flaw-mix exact match, the fitting half's majority mix's exact match, records)."""
    samples, x = probe_set["samples"], probe_set[which]
    y = [_beat_kinds(s) for s in samples]
    fit, held = range(0, len(samples), 2), range(1, len(samples), 2)
    feats, kinds = np.concatenate([x[i] for i in fit]), np.concatenate([y[i] for i in fit])
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    cents = np.stack([((feats[kinds == k] - mu) / sd).mean(0) for k in range(len(KINDS))])
    records = []
    for i in held:
        pred = np.argmin(((((x[i] - mu) / sd)[:, None] - cents[None]) ** 2).sum(-1), 1)
        flaws = [{"beat": b, "type": KINDS[k]} for b, k in enumerate(pred) if k]
        text = feedback(samples[i]["scenario"], flaws, samples[i]["beats"], np.random.default_rng(i))
        records.append(flaw_record(text, samples[i]))
    majority = majority_mix_stats(records, majority_mix([samples[i] for i in fit]))["flaw_exact"]
    return flaw_stats(records)["flaw_exact"], majority, records


def test_freeze_motion_repeats_each_clips_first_frame() -> None:
    clips = torch.randn(3, 3, 4, 8, 8)
    frozen = freeze_motion([("video", clips), ("audio", clips)])
    assert torch.equal(frozen[0][1][:, :, 3], clips[:, :, 0]) and torch.equal(frozen[0][1][:, :, 0], clips[:, :, 0])
    assert frozen[1][1] is clips  # only video frames are frozen


def test_flaw_metric_reads_motion(probe_set: dict) -> None:
    exact, majority, _ = _probe_flaw_exact(probe_set, "real")
    assert exact >= 0.75 and exact > majority + 0.3, (exact, majority)


def test_motion_free_clips_stay_at_chance_on_the_flaw_metric(probe_set: dict) -> None:
    exact, majority, _ = _probe_flaw_exact(probe_set, "frozen")
    assert exact <= majority + 0.1, (exact, majority)  # the majority mix (all clean) is 25% of clips
