"""A sample's media: which files fill which placeholders, and how each becomes a tensor (or cached features).

Sample fields (LLaVA-style JSON, all optional): ``video`` (a path, a list of paths, or for multi-view
samples a dict view name -> path), ``image`` (path or list) and ``audio`` (path or list: an audio file
or a video whose audio track is used). Each item fills one ``<video>`` / ``<image>`` / ``<audio>`` in
text order. ``<image>`` goes through the video tower as a one-clip video of the repeated frame (as
ImageBind does); with ``data.view_mode: separate`` every view of a multi-view video gets its own
``<video>``, labelled with the view's name. ``start``/``end`` (seconds, both or neither; MVBench) make
every video of the sample a segment: its clips are sampled inside ``[start, end]`` only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from skillgpt.config.schema import DataConfig
from skillgpt.constants import PLACEHOLDER_OF, Payload  # noqa: F401 (re-exported: the old import path)
from skillgpt.data.hf_preprocessing import load_image as hf_load_image
from skillgpt.data.video import MediaError, load_video
from skillgpt.pixel_rules import processor_rules


class DataError(ValueError):
    """A problem in a data file; the message names the file and the sample."""


@dataclass(frozen=True)
class MediaItem:
    """One placeholder's media: `paths` holds one file, or one per view for a fused multi-view video."""

    kind: str  # video | image | audio
    paths: tuple[Path, ...]
    views: tuple[Optional[str], ...] = (None,)
    fused: bool = False  # several views stacked into one payload [V, ...]
    segment: Optional[tuple[float, float]] = None  # (start, end) seconds of a video; None: the whole file


def _as_list(value: Any, field: str, where: str) -> list[Any]:
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, list) and value:
        return value
    raise DataError(f"{where}: field '{field}' must be a path, a list of paths or a view dict, got {value!r}")


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_segment(rec: dict[str, Any], where: str) -> Optional[tuple[float, float]]:
    """The sample's video segment ``(start, end)`` in seconds, None without ``start``/``end``; DataError
    unless both are numbers with ``0 <= start < end``."""
    if "start" not in rec and "end" not in rec:
        return None
    for name in ("start", "end"):
        if name not in rec:
            other = "end" if name == "start" else "start"
            raise DataError(f"{where}: field '{name}' missing (a segment needs both 'start' and 'end'; got {other})")
        if not _seconds(rec[name]):
            raise DataError(f"{where}: field '{name}' must be a number of seconds, got {rec[name]!r}")
    start, end = float(rec["start"]), float(rec["end"])
    if start < 0:
        raise DataError(f"{where}: field 'start' must be >= 0 seconds, got {start}")
    if end <= start:
        raise DataError(f"{where}: field 'end' ({end}) must be greater than 'start' ({start})")
    return start, end


def sample_media(rec: dict[str, Any], root: Path, cfg: DataConfig, where: str) -> list[MediaItem]:
    """The sample's media items in the order their placeholders are filled (video, image, audio lists)."""
    segment = read_segment(rec, where)
    items: list[MediaItem] = []
    for kind in ("video", "image", "audio"):
        if not rec.get(kind):
            continue
        for value in _as_list(rec[kind], kind, where):
            if isinstance(value, dict):
                if kind != "video" or not cfg.views:
                    raise DataError(f"{where}: field '{kind}' is a view dict {sorted(value)}; set data.views "
                                    "to the views to use (multi-view is for videos only)")
                absent = [v for v in cfg.views if v not in value]
                if absent:
                    raise DataError(f"{where}: video has no view(s) {absent} (has {sorted(value)}; data.views={list(cfg.views)})")
                paths = tuple(root / str(value[v]) for v in cfg.views)
                if cfg.view_mode == "separate":
                    items += [MediaItem("video", (p,), (v,), segment=segment) for p, v in zip(paths, cfg.views)]
                else:
                    items.append(MediaItem("video", paths, tuple(cfg.views), fused=True, segment=segment))
            elif isinstance(value, str):
                if kind == "video" and cfg.views:
                    raise DataError(f"{where}: data.views={list(cfg.views)} needs 'video' as a dict view -> path, "
                                    f"got the single path {value!r}")
                items.append(MediaItem(kind, (root / value,), segment=segment if kind == "video" else None))
            else:
                raise DataError(f"{where}: field '{kind}' has an entry {value!r}; expected a path")
    return items


def __getattr__(name: str) -> Any:
    """``expand_view_placeholders`` moved to the prompt builder (``skillgpt.data.prompt``)."""
    if name == "expand_view_placeholders":
        from skillgpt.data.prompt import expand_view_placeholders

        return expand_view_placeholders
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_image(path: Path, cfg: DataConfig) -> Tensor:
    """An image as a one-clip video [1, C, T, R, R], as ImageBind's ``load_and_transform_vision_data``:
    PIL bicubic resize of the short side to R, centre crop R (PIL), to [0, 1], normalise; the frame
    repeated T times. With ``data.video.processor`` a Hugging Face folder: that model's processor rules."""
    if not path.is_file():
        raise MediaError(f"{path}: image file not found (expected a readable image)")
    v = cfg.video
    if (rules := processor_rules(v.processor)) is not None:  # a Hugging Face model's own pixel rules
        try:
            return hf_load_image(path, rules, v.frames_per_clip)
        except (UnidentifiedImageError, OSError) as err:
            raise MediaError(f"{path}: cannot be decoded as an image: {err}") from err
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            rgb = TF.center_crop(TF.resize(rgb, [v.resolution], interpolation=InterpolationMode.BICUBIC), [v.resolution])
    except (UnidentifiedImageError, OSError) as err:
        raise MediaError(f"{path}: cannot be decoded as an image: {err}") from err
    pixels = TF.normalize(TF.to_tensor(rgb), mean=list(v.mean), std=list(v.std))
    return pixels.unsqueeze(1).expand(-1, v.frames_per_clip, -1, -1).unsqueeze(0).contiguous()


def load_media(item: MediaItem, cfg: DataConfig, start_shifts: Optional[list[float]] = None) -> Tensor:
    """Pixels (or log-mel clips) of one item: video [S, C, T, H, W] (fused views: [V, S, C, T, H, W]),
    image [1, C, T, H, W], audio [S, 1, mel, frames]. `start_shifts` jitters video clip starts (all
    views alike: the cameras are synchronised)."""
    if item.kind == "video":
        clips = [load_video(p, cfg.video, start_shifts=start_shifts, segment=item.segment) for p in item.paths]
        return torch.stack(clips) if item.fused else clips[0]
    if item.kind == "image":
        return load_image(item.paths[0], cfg)
    from skillgpt.data.audio import load_audio

    return load_audio(item.paths[0], cfg.audio)


def missing_files(items: list[MediaItem]) -> list[Path]:
    return [p for it in items for p in it.paths if not p.is_file()]


def collate_media(per_sample: list[list[tuple[str, Payload]]]) -> dict[str, Payload]:
    """Stack every sample's payloads by placeholder kind, in sample then placeholder order."""
    by_kind: dict[str, list[Payload]] = {}
    for items in per_sample:
        for kind, payload in items:
            by_kind.setdefault(kind, []).append(payload)
    out: dict[str, Payload] = {}
    for kind, payloads in by_kind.items():
        if isinstance(payloads[0], dict):
            out[kind] = {b: torch.stack([p[b] for p in payloads]) for b in payloads[0]}
        else:
            out[kind] = torch.stack(payloads)
    return out


def media_to(media: dict[str, Payload], device: torch.device | str) -> dict[str, Payload]:
    """Move a collated media dict to `device`."""
    return {k: ({b: t.to(device) for b, t in v.items()} if isinstance(v, dict) else v.to(device))
            for k, v in media.items()}
