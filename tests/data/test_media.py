"""Which files fill which placeholders: views, images, audio, and the errors that name the culprit."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from skillgpt.config.schema import DataConfig, VideoConfig
from skillgpt.data.media import (
    DataError, MediaItem, collate_media, expand_view_placeholders, load_image, sample_media,
)

ROOT = Path("/data")


def _cfg(**kw) -> DataConfig:
    return DataConfig(train="x.json", **kw)


def test_single_view_sample_gives_one_item_per_field_in_order():
    rec = {"video": "a.mp4", "image": ["b.png", "c.png"], "audio": "a.mp4"}
    items = sample_media(rec, ROOT, _cfg(), "s")
    assert [(i.kind, i.paths) for i in items] == [
        ("video", (ROOT / "a.mp4",)), ("image", (ROOT / "b.png",)), ("image", (ROOT / "c.png",)),
        ("audio", (ROOT / "a.mp4",)),
    ]


def test_fused_views_follow_data_views_order_and_ignore_unused_views():
    rec = {"video": {"exo2": "x2.mp4", "ego": "e.mp4", "exo1": "x1.mp4"}}
    items = sample_media(rec, ROOT, _cfg(views=["exo1", "ego"]), "s")
    assert items == [MediaItem("video", (ROOT / "x1.mp4", ROOT / "e.mp4"), ("exo1", "ego"), fused=True)]


def test_separate_views_give_one_item_and_one_labelled_placeholder_each():
    cfg = _cfg(views=["ego", "exo1"], view_mode="separate")
    items = sample_media({"video": {"ego": "e.mp4", "exo1": "x.mp4"}}, ROOT, cfg, "s")
    assert [i.views for i in items] == [("ego",), ("exo1",)] and not any(i.fused for i in items)
    turns = expand_view_placeholders([{"from": "human", "value": "<video>\nRate."}], cfg)
    assert turns[0]["value"] == "ego: <video> exo1: <video>\nRate."


def test_missing_view_is_named():
    with pytest.raises(DataError, match=r"take_7: video has no view\(s\) \['exo3'\]"):
        sample_media({"video": {"ego": "e.mp4"}}, ROOT, _cfg(views=["ego", "exo3"]), "take_7")


def test_view_settings_and_sample_shape_must_agree():
    with pytest.raises(DataError, match="needs 'video' as a dict"):
        sample_media({"video": "a.mp4"}, ROOT, _cfg(views=["ego"]), "s1")
    with pytest.raises(DataError, match="set data.views"):
        sample_media({"video": {"ego": "a.mp4"}}, ROOT, _cfg(), "s2")
    with pytest.raises(DataError, match="field 'image'"):
        sample_media({"image": 3}, ROOT, _cfg(), "s3")


def test_image_is_a_one_clip_video_of_the_repeated_frame(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (255, 0, 0)).save(path)
    cfg = _cfg(video=VideoConfig(resolution=16, frames_per_clip=2, mean=[0.0] * 3, std=[1.0] * 3))
    pixels = load_image(path, cfg)
    assert pixels.shape == (1, 3, 2, 16, 16)
    assert torch.equal(pixels[:, :, 0], pixels[:, :, 1])
    torch.testing.assert_close(pixels[0, :, 0, 8, 8], torch.tensor([1.0, 0.0, 0.0]))


def test_image_is_pil_bicubic_resize_then_centre_crop_as_the_reference(tmp_path):
    """ImageBind's vision transform: PIL bicubic Resize(R) (long side int(R * long / short)), PIL
    CenterCrop(R) (offset round((w - R) / 2): 2 here, where the video crops' ceil gives 3), ToTensor, Normalize."""
    import numpy as np

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    img.save(tmp_path / "n.png")
    cfg = _cfg(video=VideoConfig(resolution=16, frames_per_clip=1, mean=[0.0] * 3, std=[1.0] * 3))
    got = load_image(tmp_path / "n.png", cfg)[0, :, 0]
    crop = img.resize((21, 16), Image.Resampling.BICUBIC).crop((2, 0, 18, 16))
    want = torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(got, want, atol=1e-7, rtol=0)


def test_collate_stacks_each_kind_across_samples_in_order():
    a, b, c = torch.zeros(2, 3), torch.ones(2, 3), torch.full((4,), 2.0)
    out = collate_media([[("video", a), ("audio", c)], [("video", b)]])
    assert torch.equal(out["video"], torch.stack([a, b])) and out["audio"].shape == (1, 4)
    feats = collate_media([[("video", {"video": a})], [("video", {"video": b})]])
    assert torch.equal(feats["video"]["video"], torch.stack([a, b]))
