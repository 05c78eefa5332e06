"""Video file -> clip tensor, following ImageBind's reference video preprocessing.

Reference pipeline (ImageBind ``load_and_transform_video_data``):
  * ``num_clips`` clips of ``clip_duration`` seconds with evenly spread starts
    (pytorchvideo ``ConstantClipsPerVideoSampler``),
  * the frames of a clip are those with index in ``[ceil(fps*start), ceil(fps*end))``
    (pytorchvideo's decord backend), of which ``frames_per_clip`` are picked by
    ``floor(linspace(0, t - 1, frames_per_clip))`` (``UniformTemporalSubsample``),
  * scale to [0, 1], resize the short side, normalise, then square crops
    (centre, or left/centre/right -- top/centre/bottom for portrait -- for 3 crops).

Only the picked frames are decoded (decord ``get_batch``).
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from skillgpt.config.schema import VideoConfig


class MediaError(ValueError):
    """A media file is missing or cannot be decoded; the message names the path and what was expected."""


def clip_starts(num_frames: int, fps: float, cfg: VideoConfig) -> list[Fraction]:
    """Start times (seconds, exact) of the ``cfg.num_clips`` clips: ``i * max(duration - clip_duration, 0) / n``.

    Taken from pytorchvideo's ``ConstantClipsPerVideoSampler``, the sampler the ImageBind reference uses
    (``pytorchvideo.transforms`` does not import with current torchvision; the samplers do).
    """
    from pytorchvideo.data.clip_sampling import ConstantClipsPerVideoSampler

    sampler = ConstantClipsPerVideoSampler(clip_duration=Fraction(cfg.clip_duration), clips_per_video=cfg.num_clips)
    duration = Fraction(num_frames) / Fraction(fps)
    starts, last_end, is_last = [], Fraction(0), False
    while not is_last:
        info = sampler(last_end, duration, {})
        starts.append(Fraction(info.clip_start_sec))
        last_end, is_last = info.clip_end_sec, info.is_last_clip
    return starts


def sample_frame_indices(num_frames: int, fps: float, cfg: VideoConfig,
                         start_shifts: list[float] | None = None) -> list[list[int]]:
    """Frame indices for each clip: ``cfg.num_clips`` lists of ``cfg.frames_per_clip`` indices.

    A clip covers frames ``[ceil(fps * start), ceil(fps * (start + clip_duration)))`` clamped to the
    video (a video shorter than a clip yields the whole video); inside it frames are picked with
    ``floor(linspace(0, t - 1, frames_per_clip))`` so the first and last frames are included.
    Arithmetic is exact (fractions), so frame boundaries do not suffer from float rounding.
    ``start_shifts`` (training augmentation: temporal jitter) moves each clip's start by that many
    seconds, clamped so the clip stays inside the video.
    """
    if num_frames <= 0:
        raise ValueError(f"video has no frames (num_frames={num_frames})")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"video frame rate must be a positive number, got fps={fps}")
    if cfg.num_clips < 1 or cfg.frames_per_clip < 1 or cfg.clip_duration <= 0:
        raise ValueError(
            "video config needs num_clips >= 1, frames_per_clip >= 1 and clip_duration > 0, got "
            f"num_clips={cfg.num_clips}, frames_per_clip={cfg.frames_per_clip}, clip_duration={cfg.clip_duration}"
        )
    rate = Fraction(fps)
    length = Fraction(cfg.clip_duration)
    n = cfg.frames_per_clip
    clips: list[list[int]] = []
    starts = clip_starts(num_frames, fps, cfg)
    if start_shifts is not None:
        latest = max(Fraction(num_frames) / rate - length, Fraction(0))
        starts = [min(max(st + Fraction(sh).limit_denominator(10_000), Fraction(0)), latest)
                  for st, sh in zip(starts, start_shifts)]
    for start in starts:
        first = min(math.ceil(rate * start), num_frames - 1)
        end = min(math.ceil(rate * (start + length)), num_frames)
        count = max(end - first, 1)  # a clip shorter than one frame period still gets its first frame
        if n == 1:
            offsets = [0]
        else:
            # floor of linspace(0, count - 1, n), computed exactly
            offsets = [(k * (count - 1)) // (n - 1) for k in range(n)]
        clips.append([first + o for o in offsets])
    return clips


def crop_offsets(height: int, width: int, size: int, num_crops: int) -> list[tuple[int, int]]:
    """(top, left) of each square crop: centre for 1 crop; start/centre/end of the long side for 3."""
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    top = math.ceil((height - size) / 2)
    left = math.ceil((width - size) / 2)
    if num_crops == 1:
        return [(top, left)]
    if height > width:
        return [(0, left), (top, left), (height - size, left)]
    return [(top, 0), (top, left), (top, width - size)]


def _open(path: Path, num_threads: int):
    """Open ``path`` with decord, turning every failure into a MediaError."""
    if not path.exists():
        raise MediaError(f"{path}: video file not found (expected a readable video file)")
    if not path.is_file():
        raise MediaError(f"{path}: not a regular file (expected a video file)")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (expected a video file)")
    try:
        import decord
    except ImportError as err:  # pragma: no cover - decord is a hard dependency
        raise MediaError(f"{path}: cannot decode video, decord is not installed") from err
    try:
        return decord.VideoReader(os.fspath(path), ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as err:  # decord raises its own DECORDError / RuntimeError types
        raise MediaError(f"{path}: cannot be opened as a video (expected a decodable video file): {err}") from err


def load_video(path: str | os.PathLike, cfg: VideoConfig, num_threads: int = 1,
               start_shifts: list[float] | None = None) -> torch.Tensor:
    """Decode and preprocess a video into float32 ``[num_clips * num_crops, 3, frames_per_clip, R, R]``.

    Rows are clip-major: clip 0 crop 0, clip 0 crop 1, ..., clip 1 crop 0, ...
    Raises MediaError (naming the path) for a missing, unreadable or empty video.
    """
    path = Path(path)
    reader = _open(path, num_threads)
    num_frames = len(reader)
    if num_frames <= 0:
        raise MediaError(f"{path}: video has no frames (expected at least one decodable frame)")
    fps = float(reader.get_avg_fps())
    if not (fps > 0 and math.isfinite(fps)):
        raise MediaError(f"{path}: video reports frame rate {fps} (expected a positive frame rate)")
    clips = sample_frame_indices(num_frames, fps, cfg, start_shifts)
    wanted = sorted({i for clip in clips for i in clip})
    try:
        batch = reader.get_batch(wanted).asnumpy()  # [F, H, W, 3] uint8
    except Exception as err:
        raise MediaError(f"{path}: failed to decode frames {wanted} (expected a decodable video): {err}") from err
    if batch.ndim != 4 or batch.shape[0] != len(wanted) or batch.shape[-1] != 3:
        raise MediaError(f"{path}: decoded frames have shape {tuple(batch.shape)} (expected [F, H, W, 3])")

    size = cfg.resolution
    frames = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)  # [F, 3, H, W]
    frames = TF.resize(frames, [size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    frames = TF.normalize(frames, mean=list(cfg.mean), std=list(cfg.std))
    height, width = frames.shape[-2:]
    position = {frame: row for row, frame in enumerate(wanted)}
    out: list[torch.Tensor] = []
    for clip in clips:
        clip_frames = frames[[position[i] for i in clip]]  # [T, 3, H, W]
        for top, left in crop_offsets(height, width, size, cfg.num_crops):
            crop = TF.crop(clip_frames, top, left, size, size)
            out.append(crop.permute(1, 0, 2, 3))  # [3, T, R, R]
    return torch.stack(out).contiguous()
