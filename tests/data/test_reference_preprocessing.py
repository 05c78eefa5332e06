"""SkillGPT's media preprocessing against golden outputs of ImageBind's own ``data.py``.

The fixtures in ``tests/fixtures/preprocessing/`` were made by running the reference (ImageBind
``load_and_transform_video_data`` / ``load_and_transform_audio_data`` / ``load_and_transform_vision_data``
with pytorchvideo at commit 6cdc929) on the committed media files; its README says exactly how.
Tolerances (normalised units): video and image <= 1e-5, audio <= 1e-4.

A full video output is [15, 3, 2, 224, 224] (5 clips x 3 crops, clip-major); to keep the fixtures small
each video stores 16384 pixels at random positions, the full row 111 and column 111 of every
clip/crop/channel/frame, and float64 sums and sums of squares of every 224x224 plane.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skillgpt.config.schema import AudioConfig, DataConfig, VideoConfig
from skillgpt.data.audio import load_audio
from skillgpt.data.media import load_image
from skillgpt.data.video import load_video

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "preprocessing"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
VIDEO_ATOL = IMAGE_ATOL = 1e-5
AUDIO_ATOL = 1e-4
ROW = COL = 111


def _cases(kind: str) -> list[tuple[str, str]]:
    """(fixture npz, media file) pairs of one kind, as listed in the manifest."""
    return [(npz, entry["media"]) for npz, entry in MANIFEST["outputs"].items() if entry["kind"] == kind]


def _reference_video_config() -> VideoConfig:
    """ImageBind's video settings: 5 clips of 2 s, 2 frames each, short side 224, 3 crops of 224.

    Built directly: the config loader refuses num_crops != 1 until crops work end to end.
    """
    return VideoConfig(num_clips=5, clip_duration=2.0, frames_per_clip=2, resolution=224, num_crops=3)


def _per_row_max(diff: np.ndarray) -> str:
    """Max difference of each [clip, crop] row (clip-major, 3 crops), for failure messages."""
    rows = diff.reshape(diff.shape[0], -1).max(axis=1)
    return " ".join(f"c{i // 3}k{i % 3}={v:.2e}" for i, v in enumerate(rows))


def test_fixture_media_unchanged() -> None:
    """The media files are byte-identical to those the reference was run on."""
    import hashlib

    for name, digest in MANIFEST["media_sha256"].items():
        got = hashlib.sha256((FIXTURES / name).read_bytes()).hexdigest()
        assert got == digest, f"{FIXTURES / name}: sha256 {got}, manifest.json expects {digest}"


@pytest.mark.parametrize("npz,media", _cases("video"), ids=[m for _, m in _cases("video")])
def test_video_matches_reference(npz: str, media: str) -> None:
    ref = np.load(FIXTURES / npz)
    out = load_video(FIXTURES / media, _reference_video_config())
    assert tuple(out.shape) == tuple(ref["shape"]), f"{media}: shape {tuple(out.shape)}, reference {ref['shape']}"
    x = out.detach().to(torch.float32).numpy()
    frames = MANIFEST["outputs"][npz]["frame_indices"]
    row_diff = np.abs(x[..., ROW, :] - ref["row"])
    col_diff = np.abs(x[..., :, COL] - ref["col"])
    point_diff = np.abs(x.reshape(-1)[ref["positions"]] - ref["values"])
    plane_sum = x.astype(np.float64).sum(axis=(-1, -2))
    plane_sumsq = (x.astype(np.float64) ** 2).sum(axis=(-1, -2))
    n = x.shape[-1] * x.shape[-2]
    where = f"{media} (reference frames {frames})"
    assert row_diff.max() <= VIDEO_ATOL, f"{where}: row {ROW} differs by {_per_row_max(row_diff)}"
    assert col_diff.max() <= VIDEO_ATOL, f"{where}: column {COL} differs by {_per_row_max(col_diff)}"
    assert point_diff.max() <= VIDEO_ATOL, f"{where}: sampled pixels differ by up to {point_diff.max():.3e}"
    # every pixel: plane means within the pixel tolerance, plane RMS within it too
    mean_diff = np.abs(plane_sum - ref["sum"]) / n
    rms_diff = np.abs(np.sqrt(plane_sumsq / n) - np.sqrt(ref["sumsq"] / n))
    assert mean_diff.max() <= VIDEO_ATOL, f"{where}: plane means differ by {_per_row_max(mean_diff)}"
    assert rms_diff.max() <= VIDEO_ATOL, f"{where}: plane RMS differs by {_per_row_max(rms_diff)}"


@pytest.mark.parametrize("npz,media", _cases("audio"), ids=[m for _, m in _cases("audio")])
def test_audio_matches_reference(npz: str, media: str) -> None:
    ref = np.load(FIXTURES / npz)["melspec"]
    out = load_audio(FIXTURES / media, AudioConfig())
    assert tuple(out.shape) == ref.shape, f"{media}: shape {tuple(out.shape)}, reference {ref.shape}"
    diff = np.abs(out.detach().to(torch.float32).numpy() - ref)
    per_clip = " ".join(f"clip{i}={d:.2e}" for i, d in enumerate(diff.reshape(len(diff), -1).max(axis=1)))
    assert diff.max() <= AUDIO_ATOL, f"{media}: log-mel clips differ by {per_clip}"


@pytest.mark.parametrize("npz,media", _cases("image"), ids=[m for _, m in _cases("image")])
def test_image_matches_reference(npz: str, media: str) -> None:
    ref = np.load(FIXTURES / npz)["pixels"]  # [3, 224, 224]
    cfg = DataConfig(train=None, video=_reference_video_config())
    out = load_image(FIXTURES / media, cfg)  # [1, 3, T, 224, 224], the image repeated T times
    assert out.shape[0] == 1 and tuple(out.shape[1:2]) + tuple(out.shape[3:]) == ref.shape, (
        f"{media}: shape {tuple(out.shape)}, reference [1, 3, T, 224, 224] from {ref.shape}"
    )
    diff = np.abs(out[0].detach().to(torch.float32).numpy() - ref[:, None])
    assert diff.max() <= IMAGE_ATOL, f"{media}: pixels differ by up to {diff.max():.3e} (mean {diff.mean():.3e})"
