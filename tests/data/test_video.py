"""Tests for skillgpt.data.video: frame sampling, decoding, resize/crop/normalise, errors."""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from skillgpt.config.schema import VideoConfig
from skillgpt.data.video import (MediaError, _decode_pyav, clip_starts, clip_times, crop_offsets, frame_index,
                                 load_video, preprocess, sample_frame_indices, short_side_size, uniform_subsample)

BASE, STEP = 10, 8  # frame i is a flat grey image of value BASE + STEP * i


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """Write RGB uint8 frames [H, W, 3] to an (almost lossless) H.264 mp4."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=fps)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "0"}
    for img in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def indexed_video(path: Path, n: int, fps: int = 10, h: int = 48, w: int = 64) -> Path:
    return write_video(path, [np.full((h, w, 3), BASE + STEP * i, np.uint8) for i in range(n)], fps)


def frame_ids(video: torch.Tensor) -> list[list[int]]:
    """Recover the frame index of every (clip, time) from the flat grey values (cfg mean 0, std 1)."""
    values = video.mean(dim=(1, 3, 4)) * 255.0  # [N, T]
    return torch.round((values - BASE) / STEP).long().tolist()


def raw_cfg(**kw) -> VideoConfig:
    """Config without normalisation so outputs are plain [0, 1] pixels."""
    return VideoConfig(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], **kw)


# --------------------------------------------------------------------------- sampling (pure)


def test_sample_indices_reference_defaults() -> None:
    # 10 s at 10 fps, 5 clips of 2 s: starts i * 8 / 4 = 0, 2, 4, 6, 8 s (the fixed sampler); 20 frames each
    got = sample_frame_indices(100, 10.0, VideoConfig())
    assert got == [[0, 19], [20, 39], [40, 59], [60, 79], [80, 99]]


def test_clip_starts_are_the_fixed_sampler_not_pypi_0_1_5() -> None:
    # issue 16: 12 s at 30 fps, the reference samples [0,59] [75,134] ... [300,359]: the last clip ends at the
    # video's end (PyPI pytorchvideo 0.1.5 spreads starts by max_start / n: [60,119] ... [240,299])
    assert sample_frame_indices(360, 30.0, VideoConfig()) == [[0, 59], [75, 134], [150, 209], [225, 284], [300, 359]]
    assert clip_starts(360, 30.0, VideoConfig()) == [0, Fraction(5, 2), 5, Fraction(15, 2), 10]
    # one clip starts at 0; a video shorter than a clip gives n clips of the whole video
    assert clip_starts(360, 30.0, VideoConfig(num_clips=1)) == [0]
    assert clip_times(1.5, 2.0, 3) == [(0, 2)] * 3


def test_frame_indices_are_computed_in_float_as_the_reference() -> None:
    # 134 frames at 25 fps: clip 1 starts at (5.36 - 2) / 4 s, in float 0.8400000000000001, and
    # 25 * that = 21.000000000000004 -> frame 22 (21 with exact fractions, as before)
    start = clip_starts(134, 25.0, VideoConfig())[1]
    assert 25.0 * start == 21.000000000000004 and frame_index(25.0, start) == 22
    got = sample_frame_indices(134, 25.0, VideoConfig())
    assert got == [[0, 49], [22, 70], [43, 91], [64, 113], [85, 133]]
    # 3 s at 30 fps, 3 frames per clip: starts 0, .25, .5, .75, 1 s; float32 linspace(0, t - 1, 3) truncated
    cfg = VideoConfig(frames_per_clip=3)
    assert sample_frame_indices(90, 30.0, cfg) == [[0, 29, 59], [8, 37, 67], [15, 44, 74], [23, 52, 82], [30, 59, 89]]
    assert uniform_subsample(60, 3) == [0, 29, 59] and uniform_subsample(2, 4) == [0, 0, 0, 1]


def test_sample_indices_short_video_uses_whole_video() -> None:
    cfg = VideoConfig(num_clips=3, clip_duration=2.0, frames_per_clip=3)
    assert sample_frame_indices(5, 10.0, cfg) == [[0, 2, 4]] * 3
    # more samples than frames repeats frames, never goes out of range
    cfg = VideoConfig(num_clips=2, frames_per_clip=4)
    assert sample_frame_indices(2, 10.0, cfg) == [[0, 0, 0, 1]] * 2
    assert sample_frame_indices(1, 25.0, cfg) == [[0, 0, 0, 0]] * 2


def test_sample_indices_stay_in_range() -> None:
    for n, fps in [(1, 1.0), (7, 0.3), (301, 29.97), (1000, 59.94), (33, 24.0)]:
        for clips in sample_frame_indices(n, fps, VideoConfig(num_clips=7, frames_per_clip=5)):
            assert len(clips) == 5 and clips == sorted(clips)
            assert all(0 <= i < n for i in clips)


@pytest.mark.parametrize("n,fps", [(0, 10.0), (10, 0.0), (10, float("nan"))])
def test_sample_indices_rejects_bad_input(n: int, fps: float) -> None:
    with pytest.raises(ValueError):
        sample_frame_indices(n, fps, VideoConfig())


def test_crop_offsets() -> None:
    assert crop_offsets(32, 64, 32, 1) == [(0, 16)]
    assert crop_offsets(32, 64, 32, 3) == [(0, 0), (0, 16), (0, 32)]
    assert crop_offsets(64, 32, 32, 3) == [(0, 0), (16, 0), (32, 0)]
    assert crop_offsets(32, 43, 32, 1) == [(0, 6)]  # ceil((43 - 32) / 2), as the reference
    with pytest.raises(ValueError):
        crop_offsets(32, 32, 32, 2)


# --------------------------------------------------------------------------- decoding


def test_load_video_picks_exact_frames(tmp_path: Path) -> None:
    path = indexed_video(tmp_path / "idx.mp4", n=25, fps=10)  # 2.5 s
    cfg = raw_cfg(num_clips=3, clip_duration=1.0, frames_per_clip=3, resolution=32)
    video = load_video(path, cfg)
    assert video.shape == (3, 3, 3, 32, 32) and video.dtype == torch.float32
    # starts 0, .75, 1.5 s -> first frames 0, 8, 15; 10 frames per clip -> offsets 0, 4, 9
    expected = [[0, 4, 9], [8, 12, 17], [15, 19, 24]]
    assert sample_frame_indices(25, 10.0, cfg) == expected
    assert frame_ids(video) == expected


def test_load_video_default_config_shape(tmp_path: Path) -> None:
    path = indexed_video(tmp_path / "d.mp4", n=30, fps=10, h=64, w=96)
    video = load_video(str(path), VideoConfig(num_crops=3))
    assert video.shape == (15, 3, 2, 224, 224)
    assert torch.isfinite(video).all()


def test_load_video_short_video(tmp_path: Path) -> None:
    path = indexed_video(tmp_path / "short.mp4", n=5, fps=10)  # 0.5 s, shorter than one clip
    video = load_video(path, raw_cfg(num_clips=2, clip_duration=2.0, frames_per_clip=3, resolution=16))
    assert video.shape == (2, 3, 3, 16, 16)
    assert frame_ids(video) == [[0, 2, 4], [0, 2, 4]]


def test_load_video_single_frame(tmp_path: Path) -> None:
    path = indexed_video(tmp_path / "one.mp4", n=1, fps=10)
    video = load_video(path, raw_cfg(num_clips=2, frames_per_clip=2, resolution=16))
    assert frame_ids(video) == [[0, 0], [0, 0]]


def test_load_video_normalisation(tmp_path: Path) -> None:
    path = indexed_video(tmp_path / "n.mp4", n=3, fps=10)
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 0.125]
    video = load_video(path, VideoConfig(num_clips=1, frames_per_clip=1, resolution=16, mean=mean, std=std))
    pixel = BASE / 255.0  # frame 0
    for c in range(3):
        expected = (pixel - mean[c]) / std[c]
        assert torch.allclose(video[0, c], torch.full_like(video[0, c], expected), atol=2.5 / 255 / std[c])
    raw = load_video(path, raw_cfg(num_clips=1, frames_per_clip=1, resolution=16))
    for c in range(3):
        assert torch.allclose(video[0, c], (raw[0, c] - mean[c]) / std[c], atol=1e-5)


def gradient_video(path: Path, h: int, w: int, axis: int) -> Path:
    """Frames whose grey value grows linearly along `axis` (0 = rows, 1 = columns) from 0 to ~255."""
    length = (h, w)[axis]
    ramp = np.round(np.arange(length) * 255.0 / (length - 1)).astype(np.uint8)
    shaped = ramp[:, None, None] if axis == 0 else ramp[None, :, None]
    img = np.broadcast_to(shaped, (h, w, 3)).copy()
    return write_video(path, [img] * 4, fps=10)


def test_three_crops_landscape_left_centre_right(tmp_path: Path) -> None:
    path = gradient_video(tmp_path / "land.mp4", h=64, w=128, axis=1)  # resized to 32 x 64
    cfg = raw_cfg(num_clips=2, frames_per_clip=2, resolution=32, num_crops=3)
    video = load_video(path, cfg)
    assert video.shape == (6, 3, 2, 32, 32)
    left, centre, right = video[0], video[1], video[2]
    # crops at x = 0, 16, 32 of the 64-wide frame: overlapping halves are identical
    assert torch.equal(left[..., 16:], centre[..., :16])
    assert torch.equal(centre[..., 16:], right[..., :16])
    assert left[..., 0].mean() < 0.05 and right[..., -1].mean() > 0.95
    assert abs(centre[..., 0].mean().item() - 0.25) < 0.05  # column 16 of 64
    # clip-major order: clip 1 has the same (static) crops
    assert torch.allclose(video[3:], video[:3], atol=2 / 255)
    centre_only = load_video(path, raw_cfg(num_clips=2, frames_per_clip=2, resolution=32, num_crops=1))
    assert centre_only.shape == (2, 3, 2, 32, 32)
    assert torch.equal(centre_only[0], centre)


def test_three_crops_portrait_top_centre_bottom(tmp_path: Path) -> None:
    path = gradient_video(tmp_path / "port.mp4", h=128, w=64, axis=0)  # resized to 64 x 32
    video = load_video(path, raw_cfg(num_clips=1, frames_per_clip=2, resolution=32, num_crops=3))
    top, centre, bottom = video[0], video[1], video[2]
    assert torch.equal(top[..., 16:, :], centre[..., :16, :])
    assert torch.equal(centre[..., 16:, :], bottom[..., :16, :])
    assert top[..., 0, :].mean() < 0.05 and bottom[..., -1, :].mean() > 0.95
    # columns are constant in a vertical gradient
    assert torch.allclose(top, top[..., :1].expand_as(top), atol=3 / 255)


# --------------------------------------------------------------------------- fast decoding and resize


def textured_video(path: Path, n: int = 48, gop: int = 6, bframes: int = 3, pix_fmt: str = "yuv420p",
                   size: tuple[int, int] = (96, 64), rotation: int | None = None) -> Path:
    """A panning 4x4-block texture (real motion, B-frames), one keyframe every `gop` frames (closed GOP)."""
    rng = np.random.default_rng(0)
    w, h = size
    blocks = rng.integers(0, 256, (h // 4 + 1, (w + 2 * n) // 4 + 1, 3), dtype=np.uint8)
    tex = np.kron(blocks, np.ones((4, 4, 1), np.uint8))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        stream.options = {"g": str(gop), "keyint_min": str(gop), "bf": str(bframes), "sc_threshold": "0"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(n):
            img = np.ascontiguousarray(tex[:h, 2 * i: 2 * i + w])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path


def wanted_sets(n: int, keys: list[int]) -> list[list[int]]:
    """Frame sets that exercise seeking (keyframes only) and decoding on (every frame, GOP ends)."""
    picks = [list(range(n)), keys, sorted({k - 1 for k in keys[1:]} | {n - 1}), [n - 1], [0],
             sorted(set(np.random.default_rng(1).choice(n, 9).tolist()))]
    for cfg in (VideoConfig(), VideoConfig(num_clips=16, clip_duration=1.0, frames_per_clip=3)):
        picks.append(sorted({i for clip in sample_frame_indices(n, 10.0, cfg) for i in clip}))
    return picks


@pytest.mark.parametrize("gop,bframes,pix_fmt", [
    (3, 2, "yuv420p"),     # small GOP
    (48, 3, "yuv420p"),    # one keyframe for the whole video (large GOP)
    (6, 3, "yuvj420p"), (6, 0, "yuv422p"), (6, 3, "yuv444p"),
])
def test_pyav_frames_equal_decord_get_batch(tmp_path: Path, gop: int, bframes: int, pix_fmt: str) -> None:
    import decord

    path = textured_video(tmp_path / "t.mp4", gop=gop, bframes=bframes, pix_fmt=pix_fmt)
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    n, keys = len(reader), [int(k) for k in reader.get_key_indices()]
    assert n == 48 and keys == list(range(0, 48, gop))
    for wanted in wanted_sets(n, keys):
        ref = reader.get_batch(wanted).asnumpy()
        for threads in (1, 2):
            got = _decode_pyav(path, wanted, n, keys, threads)
            assert got is not None, f"fast path not taken for {wanted}"
            assert np.array_equal(got, ref), f"frames {wanted} differ from decord (threads={threads})"


def other_video(path: Path, codec: str, pix_fmt: str = "yuv420p", audio: bool = False, first_pts: int = 0,
                variable_rate: bool = False, n: int = 40) -> Path:
    """A panning texture in another codec / container, optionally with an audio stream, a late first
    timestamp or a variable frame rate."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (48, 64 + 3 * n, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        if variable_rate:
            stream.time_base = Fraction(1, 1000)
        sound = container.add_stream("aac", rate=16000) if audio else None
        t = 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(tex[:, 3 * i: 3 * i + 64]), format="rgb24")
            t += int(rng.integers(50, 150)) if variable_rate else 1
            frame.pts = t if variable_rate else first_pts + i
            container.mux(stream.encode(frame))
            if sound is not None:
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1600), np.float32), format="flt", layout="mono")
                chunk.sample_rate = 16000
                container.mux(sound.encode(chunk))
        container.mux(stream.encode())
        if sound is not None:
            container.mux(sound.encode())
    return path


@pytest.mark.parametrize("name,codec,kw", [
    ("hevc.mp4", "libx265", {}), ("vp9.webm", "libvpx-vp9", {}), ("vp8.webm", "libvpx", {}),
    ("mpeg4.avi", "mpeg4", {}), ("mjpeg.avi", "mjpeg", {"pix_fmt": "yuvj420p"}), ("h264.mkv", "libx264", {}),
    ("audio.mp4", "libx264", {"audio": True}), ("late_start.mp4", "libx264", {"first_pts": 7}),
    ("vfr.mp4", "libx264", {"variable_rate": True}),
])
def test_pyav_frames_equal_decord_across_codecs_and_containers(tmp_path: Path, name: str, codec: str, kw) -> None:
    """Frames of either path are the same on what researchers' datasets hold besides H.264 mp4."""
    import decord

    path = other_video(tmp_path / name, codec, **kw)
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    n, keys = len(reader), [int(k) for k in reader.get_key_indices()]
    assert n == 40
    for wanted in ([0, n // 3, n // 2, n - 1], list(range(0, n, 7)), [n - 1]):
        got = _decode_pyav(path, wanted, n, keys, 1)
        assert got is not None, f"{name}: fast path not taken for {wanted}"
        assert np.array_equal(got, reader.get_batch(wanted).asnumpy()), f"{name}: frames {wanted} differ"


def test_load_video_takes_the_pyav_path(tmp_path: Path, monkeypatch) -> None:
    import decord

    def no_get_batch(self, *args, **kwargs):
        raise RuntimeError("decord get_batch was used")

    path = textured_video(tmp_path / "t.mp4")
    expected = load_video(path, VideoConfig(resolution=32))
    monkeypatch.setattr(decord.VideoReader, "get_batch", no_get_batch)
    assert torch.equal(load_video(path, VideoConfig(resolution=32)), expected)


def test_files_too_large_to_index_go_to_decord(tmp_path: Path, monkeypatch) -> None:
    """Above PYAV_MAX_BYTES the PyAV path (which reads the whole file to index it) is not used."""
    import skillgpt.data.video as video

    path = textured_video(tmp_path / "t.mp4")
    monkeypatch.setattr(video, "PYAV_MAX_BYTES", path.stat().st_size - 1)
    monkeypatch.setattr(video, "_decode_pyav", lambda *a, **k: pytest.fail("PyAV path used for a large file"))
    assert load_video(path, VideoConfig(resolution=32)).shape[0] == 5


def test_pyav_seek_landing_before_the_keyframe_decodes_on(tmp_path: Path, monkeypatch) -> None:
    """A container whose seeks land on an earlier keyframe (here: always the first) gives the same frames."""
    import decord

    class EarlySeek:
        def __init__(self, container) -> None:
            self.container = container

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.container.close()

        def __getattr__(self, name: str):
            return getattr(self.container, name)

        def seek(self, offset: int, **kw) -> None:
            self.container.seek(0, **kw)

    path = textured_video(tmp_path / "t.mp4", gop=6)
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    keys, wanted = [int(k) for k in reader.get_key_indices()], [3, 20, 21, 40, 47]
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **kw: EarlySeek(real_open(*a, **kw)))
    got = _decode_pyav(path, wanted, len(reader), keys, 1)
    assert got is not None and np.array_equal(got, reader.get_batch(wanted).asnumpy())


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_display_rotation_is_applied_as_decord_does(tmp_path: Path, rotation: int) -> None:
    """Phone video: the frames come out upright, as decord gives them where decord manages (it fails on
    some frame sizes, e.g. 64x48 turned a quarter)."""
    import decord

    path = textured_video(tmp_path / "rot.mp4", rotation=rotation)  # 96x64
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    keys = [int(k) for k in reader.get_key_indices()]
    got = _decode_pyav(path, [0, 7, 30], len(reader), keys, 1)
    assert got is not None and np.array_equal(got, reader.get_batch([0, 7, 30]).asnumpy())
    small = textured_video(tmp_path / "small.mp4", size=(64, 48), rotation=rotation)
    video = load_video(small, VideoConfig(num_clips=2, frames_per_clip=2, resolution=32))
    assert video.shape == (2, 3, 2, 32, 32) and torch.isfinite(video).all()


def test_pyav_path_declines_what_it_is_not_verified_on(tmp_path: Path) -> None:
    import decord

    for path in (textured_video(tmp_path / "hi.mp4", pix_fmt="yuv420p10le"),):
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        keys = [int(k) for k in reader.get_key_indices()]
        assert _decode_pyav(path, [0, 7, 30], len(reader), keys, 1) is None
        cfg = VideoConfig(num_clips=2, frames_per_clip=2, resolution=32)
        video = load_video(path, cfg)  # decord get_batch decodes it instead
        assert video.shape == (2, 3, 2, 32, 32) and torch.isfinite(video).all()


def reference_preprocess(frames: torch.Tensor, clips: list[list[int]], cfg: VideoConfig) -> torch.Tensor:
    """ImageBind's per-clip video transform written out: float [C, T, H, W] -> /255 -> short_side_scale
    (bilinear, no antialias) -> NormalizeVideo -> SpatialCrop (uniform_crop), clip-major."""
    out = []
    for clip in clips:
        x = frames[clip].float().permute(3, 0, 1, 2) / 255.0  # [C, T, H, W]
        h, w = x.shape[-2:]
        size = cfg.resolution
        new_h, new_w = (int(math.floor(h / w * size)), size) if w < h else (size, int(math.floor(w / h * size)))
        x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
        x = (x - torch.tensor(cfg.mean).view(3, 1, 1, 1)) / torch.tensor(cfg.std).view(3, 1, 1, 1)
        for idx in ([0, 1, 2] if cfg.num_crops == 3 else [1]):
            top, left = math.ceil((new_h - size) / 2), math.ceil((new_w - size) / 2)
            if new_h > new_w:
                top = {0: 0, 1: top, 2: new_h - size}[idx]
            else:
                left = {0: 0, 1: left, 2: new_w - size}[idx]
            out.append(x[..., top:top + size, left:left + size])
    return torch.stack(out)


@pytest.mark.parametrize("height,width", [(64, 96), (112, 64), (37, 65), (48, 48), (360, 640), (20, 30)])
@pytest.mark.parametrize("size,crops", [(32, 1), (56, 3), (224, 1)])
def test_preprocess_is_the_reference_transform(height: int, width: int, size: int, crops: int) -> None:
    rng = np.random.default_rng(height * width)
    frames = torch.from_numpy(rng.integers(0, 256, (3, height, width, 3), dtype=np.uint8))
    cfg = VideoConfig(num_clips=2, frames_per_clip=2, resolution=size, num_crops=crops)
    clips, wanted = [[0, 1], [1, 2]], [0, 1, 2]
    got = preprocess(frames, clips, wanted, cfg)
    assert got.shape == (2 * crops, 3, 2, size, size)
    torch.testing.assert_close(got, reference_preprocess(frames, clips, cfg), atol=1e-6, rtol=0)
    if min(height, width) > 2 * size:  # a downscale: an antialiased resize (the old default) differs
        smooth = torch.nn.functional.interpolate(frames.permute(0, 3, 1, 2).float(), size=short_side_size(height, width, size),
                                                 mode="bilinear", antialias=True)
        assert not torch.allclose(got[0, :, 0], (smooth[0, :, :size, :size] / 255 - torch.tensor(cfg.mean).view(3, 1, 1))
                                  / torch.tensor(cfg.std).view(3, 1, 1), atol=1e-2)


def test_short_side_size_rounds_as_pytorchvideo() -> None:
    assert short_side_size(720, 1280, 224) == (224, 398)  # floor(1280 / 720 * 224) = floor(398.22)
    assert short_side_size(320, 180, 224) == (398, 224)
    assert short_side_size(48, 48, 32) == (32, 32)
    assert short_side_size(240, 320, 224) == (224, 298)


# --------------------------------------------------------------------------- errors


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    with pytest.raises(MediaError, match="nope.mp4") as info:
        load_video(path, VideoConfig())
    assert "expected" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_text_file_named_mp4(tmp_path: Path) -> None:
    path = tmp_path / "fake.mp4"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(MediaError, match="fake.mp4") as info:
        load_video(path, VideoConfig())
    assert "video" in str(info.value)


def test_empty_file_and_directory(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty.mp4"):
        load_video(empty, VideoConfig())
    folder = tmp_path / "dir.mp4"
    folder.mkdir()
    with pytest.raises(MediaError, match="dir.mp4"):
        load_video(folder, VideoConfig())


def test_videogpt_plus_sampling_takes_its_frames_and_zero_pads(tmp_path) -> None:
    clip = indexed_video(tmp_path / "v.mp4", 30, fps=10)  # 3 s: 3 positions at 1 fps, re-spaced to 8
    cfg = VideoConfig(sampling="videogpt_plus", num_clips=3, frames_per_clip=4, resolution=32, mean=[0.0] * 3,
                      std=[1.0] * 3, processor=None)
    video = load_video(clip, cfg)
    assert video.shape == (3, 3, 4, 32, 32)
    assert frame_ids(video[:2]) == [[0, 4, 8, 12], [16, 20, 24, 28]]
    assert torch.count_nonzero(video[2]) == 0  # 12 slots, 8 frames: the last clip is VideoGPT+'s zero padding
