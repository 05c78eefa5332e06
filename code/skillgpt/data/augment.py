"""Training augmentation for clips: temporal jitter, random resized crops, scenario-aware flips.

Every random draw comes from a generator seeded by (seed, epoch, sample index), so a resumed run sees
the same augmented samples, and evaluation (which never calls this) sees none. One set of spatial
parameters is drawn per media item and applied to all its clips and frames, so motion is untouched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from skillgpt.config.schema import AugmentConfig, VideoConfig


@dataclass(frozen=True)
class AugmentParams:
    start_shifts: Optional[list[float]]  # seconds per clip (None: no jitter)
    crop: Optional[tuple[float, float, float]]  # (side fraction, top fraction, left fraction)
    flip: bool


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_033 + index)


def draw_params(cfg: AugmentConfig, video: VideoConfig, scenario: Optional[str], g: torch.Generator) -> AugmentParams:
    """One media item's augmentation parameters."""
    u = lambda: float(torch.rand((), generator=g))  # noqa: E731
    shifts = None
    if cfg.temporal_jitter > 0:
        span = cfg.temporal_jitter * video.clip_duration
        shifts = [(2 * u() - 1) * span for _ in range(video.num_clips)]
    lo, hi = cfg.crop_scale
    crop = None
    if lo < 1.0 or hi < 1.0:
        side = math.sqrt(lo + (hi - lo) * u())
        crop = (side, u() * (1 - side), u() * (1 - side))
    allowed = "*" in cfg.hflip_scenarios or (scenario is not None and scenario in cfg.hflip_scenarios)
    return AugmentParams(shifts, crop, bool(allowed and u() < 0.5))


def apply_spatial(pixels: Tensor, params: AugmentParams) -> Tensor:
    """Same crop (resized back) and flip for every frame of [..., C, T, H, W] or [..., C, H, W] pixels."""
    if params.crop is None and not params.flip:
        return pixels
    h, w = pixels.shape[-2:]
    flat = pixels.reshape(-1, h, w)
    if params.crop is not None:
        side, top, left = params.crop
        ch, cw = max(1, round(side * h)), max(1, round(side * w))
        flat = TF.resized_crop(flat, round(top * h), round(left * w), ch, cw, [h, w],
                               interpolation=InterpolationMode.BILINEAR, antialias=True)
    if params.flip:
        flat = TF.horizontal_flip(flat)
    return flat.reshape(pixels.shape)


def length_grouped(order: list[int], keys: list[tuple], micro_batch: int, mega: int = 32) -> list[int]:
    """LLaVA-style grouping: within consecutive mega-batches of `mega` micro-batches, sort samples by
    `keys[i]` (e.g. (media kinds, length)) so each micro-batch holds similar samples; the order of
    mega-batches stays random, so does which samples meet."""
    size = micro_batch * mega
    out: list[int] = []
    for start in range(0, len(order), size):
        out += sorted(order[start : start + size], key=lambda i: keys[i])
    return out
