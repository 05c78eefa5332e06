"""Training augmentation and length-grouped batching: seeded, motion-preserving, off unless asked."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skillgpt.cli import main
from skillgpt.config.schema import AugmentConfig, VideoConfig
from skillgpt.data.augment import AugmentParams, apply_spatial, draw_params, length_grouped, sample_generator
from skillgpt.data.dataset import SkillDataset
from skillgpt.data.video import sample_frame_indices
from skillgpt.models.build import build_model

REPO = Path(__file__).resolve().parents[2]
VIDEO = VideoConfig(num_clips=8, clip_duration=1.0, frames_per_clip=2)


def test_params_are_seeded_and_flips_follow_the_scenario_allow_list():
    cfg = AugmentConfig(enabled=True, temporal_jitter=0.25, crop_scale=[0.6, 0.9], hflip_scenarios=["dance"])
    a = draw_params(cfg, VIDEO, "dance", sample_generator(1, 2, 3))
    assert a == draw_params(cfg, VIDEO, "dance", sample_generator(1, 2, 3))
    assert a != draw_params(cfg, VIDEO, "dance", sample_generator(1, 3, 3))
    assert len(a.start_shifts) == 8 and all(abs(s) <= 0.25 for s in a.start_shifts)
    assert 0.6 ** 0.5 <= a.crop[0] <= 0.9 ** 0.5
    flips = [draw_params(cfg, VIDEO, sc, sample_generator(0, 0, i)).flip for sc in ("dance", "bouldering")
             for i in range(40)]
    assert any(flips[:40]) and not any(flips[40:])  # never mirrored where the scenario is not listed
    off = draw_params(AugmentConfig(enabled=True), VIDEO, "dance", sample_generator(0, 0, 0))
    assert off == AugmentParams(None, None, False)


def test_jittered_clip_starts_stay_inside_the_video():
    base = sample_frame_indices(72, 8.0, VIDEO)
    assert sample_frame_indices(72, 8.0, VIDEO, [0.0] * 8) == base
    shifted = sample_frame_indices(72, 8.0, VIDEO, [-5.0, 0.25, 0, 0, 0, 0, 0, 5.0])
    assert shifted[0] == [0, 7] and shifted[1] == [base[1][0] + 2, base[1][1] + 2] and shifted[-1] == [64, 71]


def test_spatial_augmentation_is_the_same_for_every_frame():
    frame = torch.rand(3, 16, 16)
    clip = frame[:, None].expand(3, 4, 16, 16).clone()  # a still clip: 4 identical frames
    out = apply_spatial(clip, AugmentParams(None, (0.7, 0.1, 0.2), True))
    assert out.shape == clip.shape and not torch.equal(out, clip)
    assert all(torch.equal(out[:, 0], out[:, t]) for t in range(4))  # still stays still: no fake motion
    flip = AugmentParams(None, None, True)
    assert torch.equal(apply_spatial(apply_spatial(clip, flip), flip), clip)
    assert apply_spatial(clip, AugmentParams([0.1], None, False)) is clip


def test_length_grouping_is_a_permutation_sorted_within_mega_batches():
    keys = [(("video",), n) for n in [5, 1, 4, 2, 8, 7, 3, 6]]
    order = [7, 0, 3, 5, 1, 6, 2, 4]
    grouped = length_grouped(order, keys, micro_batch=2, mega=2)
    assert sorted(grouped) == sorted(order)
    assert [keys[i][1] for i in grouped] == [2, 5, 6, 7, 1, 3, 4, 8]


def test_dataset_augments_only_when_enabled_and_reproducibly(tiny_workspace):
    cfg = tiny_workspace.config(2, "aug", "train.init_from=null", "data.cache_videos=false")
    model, tok = build_model(cfg)
    ds = SkillDataset(cfg.data.train, cfg.data, tok, cfg.model.llm.template, model.placeholder_tokens(),
                      cfg.model.llm.max_length)
    plain = ds[0]["media"][0][1]
    ds.augment = AugmentConfig(enabled=True, temporal_jitter=0.3, crop_scale=[0.5, 0.8], hflip_scenarios=["*"])
    ds.set_epoch(0, seed=7)
    a, again = ds[0]["media"][0][1], ds[0]["media"][0][1]
    ds.set_epoch(1, seed=7)
    b = ds[0]["media"][0][1]
    assert a.shape == plain.shape and torch.equal(a, again) and not torch.equal(a, plain) and not torch.equal(a, b)


def test_training_with_augmentation_and_length_grouping(tiny_workspace):
    args = tiny_workspace.overrides(2, "augrun", "train.init_from=null", "train.max_steps=1",
                                    "data.augment.enabled=true", "data.augment.temporal_jitter=0.2",
                                    "data.augment.crop_scale=[0.7,1.0]", "data.augment.hflip_scenarios=[basketball_dribble]",
                                    "data.group_by_length=true")
    assert main(["train", str(REPO / "config" / "stage_2.yaml"), *args]) == 0
    with pytest.warns(UserWarning, match="augment"):
        from skillgpt.data.cached_features import open_features

        cfg = tiny_workspace.config(2, "augrun", "train.init_from=null", "data.augment.enabled=true",
                                    "data.feature_cache=/nonexistent")
        assert open_features(cfg, None, [], "train") is None
