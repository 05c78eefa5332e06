"""Hugging Face pixel rules: video frames and images preprocessed exactly as a model folder's
``preprocessor_config.json`` says, as its ``transformers`` image / video processor does (torchvision backend,
the one ``AutoImageProcessor`` / ``AutoVideoProcessor`` pick in transformers 5).

This module owns those rules. ``read_rules`` resolves the JSON with the processor class it names (class
defaults fill absent fields, exactly as transformers) and refuses, naming the file and the field, what
SkillGPT cannot honour. ``preprocess_frames`` then applies, to decoded uint8 RGB frames:
  * resize (``do_resize``): ``size`` ``shortest_edge`` (aspect kept, long side ``int(edge * long / short)``,
    optionally capped by ``longest_edge``) or ``height``/``width``, with the ``resample`` filter (PIL codes:
    0 nearest, 1 lanczos, 2 bilinear, 3 bicubic) by ``torchvision`` ``resize`` on the uint8 frames with
    antialias (so the resized frames are rounded to uint8, as the processor's),
  * centre crop (``do_center_crop``) of ``crop_size`` at ``int((H - h) / 2)``, zero padding first when the
    frame is smaller,
  * ``do_rescale`` (``rescale_factor``) and ``do_normalize`` (``image_mean`` / ``image_std``), fused as the
    processor does: ``(x - mean / factor) / (std / factor)`` in float32.
Three crops (``data.video.num_crops: 3``) are the processor's centre crop plus the two ends of the long side
(one centre crop is exactly the processor's output). Checked against the processors themselves:
tests/models/test_hf_preprocessing.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

# data.video.processor: "auto" (the schema default) is resolved by the config loader to the Hugging Face
# encoder's folder or to null (ImageBind's reference preprocessing, data/video.py); left unresolved (a
# VideoConfig built directly) it means ImageBind's too.
AUTO = "auto"
# Part of the feature-cache signature with the resolved rules: change it when the arithmetic below changes.
HF_PREPROCESSING = "hf-processor-torchvision/1"
# Encoders (registry names) whose model folder carries the pixel rules; the config loader points
# data.video.processor at model.encoder.path for them.
PROCESSOR_ENCODERS = ("hf_image", "hf_video")

# Processor classes whose pipeline is resize -> centre crop -> rescale/normalise (their _preprocess).
SUPPORTED_PROCESSORS = ("CLIPImageProcessor", "SiglipImageProcessor", "VideoMAEImageProcessor",
                        "VideoMAEVideoProcessor", "TimesformerVideoProcessor")
# The class a folder without image_processor_type gets, by config.json model_type (AutoImageProcessor's
# choice where it has one; the vision-tower model types it lacks get their full model's).
DEFAULT_PROCESSOR = {"clip": "CLIPImageProcessor", "clip_vision_model": "CLIPImageProcessor",
                     "siglip": "SiglipImageProcessor", "siglip_vision_model": "SiglipImageProcessor",
                     "videomae": "VideoMAEImageProcessor", "timesformer": "VideoMAEImageProcessor"}
# Fields that change pixels and are honoured (some only at one value: checked in read_rules).
HONOURED = frozenset({"do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
                      "rescale_factor", "do_normalize", "image_mean", "image_std", "do_convert_rgb", "do_pad",
                      "do_sample_frames", "default_to_square", "use_square_size"})
# Fields without effect on the pixels of one RGB frame (class names, output formats, frame sampling that
# do_sample_frames: false switches off).
METADATA = frozenset({"image_processor_type", "video_processor_type", "feature_extractor_type", "processor_class",
                      "_processor_class", "input_data_format", "data_format", "return_tensors", "device",
                      "disable_grouping", "num_frames", "fps", "return_metadata", "video_metadata"})
# PIL resample codes torchvision resizes uint8 tensors with (the processor's mapping).
RESAMPLE = {0: "NEAREST_EXACT", 1: "LANCZOS", 2: "BILINEAR", 3: "BICUBIC"}


@dataclass(frozen=True)
class PixelRules:
    """The resolved pixel settings of one preprocessor_config.json (``source``, not compared)."""

    processor: str  # transformers class the settings were resolved with
    do_resize: bool
    shortest_edge: Optional[int]
    longest_edge: Optional[int]
    height: Optional[int]  # fixed-size resize (height and width), when shortest_edge is None
    width: Optional[int]
    resample: int  # PIL code
    do_center_crop: bool
    crop: Optional[tuple[int, int]]  # (height, width)
    do_rescale: bool
    rescale_factor: float
    do_normalize: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = field(default="", compare=False)

    def signature(self) -> dict[str, Any]:
        """JSON-able settings for the feature cache (the source path excluded)."""
        return {k: v for k, v in self.__dict__.items() if k != "source"} | {"arithmetic": HF_PREPROCESSING}

    def affine(self) -> tuple[list[float], list[float]]:
        """Per-channel (scale, offset) with pixel = uint8 value * scale + offset."""
        factor = self.rescale_factor if self.do_rescale else 1.0
        if not self.do_normalize:
            return [factor] * 3, [0.0] * 3
        return [factor / s for s in self.std], [-m / s for m, s in zip(self.mean, self.std)]

    def output_size(self) -> Optional[tuple[int, int]]:
        """(height, width) of every processed frame, None when it depends on the input's shape."""
        if self.do_center_crop:
            return self.crop
        return (self.height, self.width) if self.do_resize and self.shortest_edge is None else None


def _problem(file: Path, name: str, why: str) -> ValueError:
    return ValueError(f"{file}: field '{name}' {why}")


def _processor_name(file: Path, raw: dict[str, Any], folder: Path) -> str:
    """The processor class the folder's settings are read with: its own declaration, else by model_type."""
    for key in ("image_processor_type", "video_processor_type", "feature_extractor_type"):
        if raw.get(key):
            name = str(raw[key]).replace("FeatureExtractor", "ImageProcessor").removesuffix("Fast")
            if name not in SUPPORTED_PROCESSORS:
                raise _problem(file, key, f"is {raw[key]!r}; SkillGPT follows only {', '.join(SUPPORTED_PROCESSORS)} "
                                          "(resize, centre crop, rescale, normalise)")
            return name
    config = folder / "config.json"
    model_type = json.loads(config.read_text()).get("model_type") if config.is_file() else None
    if model_type not in DEFAULT_PROCESSOR:
        raise _problem(file, "image_processor_type", f"is missing and {config} has model_type {model_type!r}; "
                                                     f"name one of {', '.join(SUPPORTED_PROCESSORS)}")
    return DEFAULT_PROCESSOR[model_type]


def _per_channel(file: Path, name: str, values: Any) -> tuple[float, ...]:
    values = [values] * 3 if isinstance(values, (int, float)) else list(values)
    if len(values) != 3:
        raise _problem(file, name, f"must have 3 values (RGB), got {values}")
    return tuple(float(v) for v in values)


def read_rules(folder: str | Path) -> PixelRules:
    """The pixel rules of ``folder/preprocessor_config.json`` as its transformers processor resolves them.

    FileNotFoundError without the file; ValueError naming the file and the field for anything SkillGPT
    cannot honour (an unknown field, another processor class, padding, frame sampling by the processor,
    a resize or crop that leaves frames without one fixed size, an unsupported filter)."""
    import transformers

    folder = Path(folder).expanduser()
    file = folder / "preprocessor_config.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: not found (data.video.processor needs the model's preprocessor_config.json; "
                                "set data.video.processor: null for ImageBind's preprocessing)")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file}: not valid JSON: {err}") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{file}: expected a JSON object of processor settings")
    unknown = sorted(set(raw) - HONOURED - METADATA)
    if unknown:
        raise _problem(file, unknown[0], "is not one SkillGPT knows how to honour (it follows "
                                         f"{', '.join(sorted(HONOURED - {'do_pad', 'do_sample_frames'}))})")
    name = _processor_name(file, raw, folder)
    settings = {k: v for k, v in raw.items() if k in HONOURED}
    try:
        proc = getattr(transformers, name)(**settings)
    except (TypeError, ValueError, KeyError) as err:
        raise ValueError(f"{file}: {name} rejects these settings: {err}") from err
    for flag in ("do_pad", "do_sample_frames"):
        if getattr(proc, flag, None):
            raise _problem(file, flag, "is true; SkillGPT samples frames itself (data.video) and never pads")
    size, crop = proc.size, proc.crop_size
    if proc.do_resize and not (size.shortest_edge or (size.height and size.width)):
        raise _problem(file, "size", f"resolves to {dict(size)}; SkillGPT follows shortest_edge (optionally with "
                                     "longest_edge) or height and width")
    resample = int(proc.resample)
    if proc.do_resize and resample not in RESAMPLE:
        raise _problem(file, "resample", f"is {resample}; SkillGPT resizes with {sorted(RESAMPLE)} "
                                         "(0 nearest, 1 lanczos, 2 bilinear, 3 bicubic)")
    if proc.do_center_crop and not (crop and crop.height and crop.width):
        raise _problem(file, "crop_size", f"resolves to {crop}; expected height and width")
    rules = PixelRules(
        processor=name, do_resize=bool(proc.do_resize),
        shortest_edge=size.shortest_edge if proc.do_resize else None,
        longest_edge=size.longest_edge if proc.do_resize else None,
        height=size.height if proc.do_resize and not size.shortest_edge else None,
        width=size.width if proc.do_resize and not size.shortest_edge else None,
        resample=resample, do_center_crop=bool(proc.do_center_crop),
        crop=(int(crop.height), int(crop.width)) if proc.do_center_crop else None,
        do_rescale=bool(proc.do_rescale), rescale_factor=float(proc.rescale_factor),
        do_normalize=bool(proc.do_normalize),
        mean=_per_channel(file, "image_mean", proc.image_mean), std=_per_channel(file, "image_std", proc.image_std),
        source=str(file),
    )
    if rules.output_size() is None:
        raise _problem(file, "do_center_crop", "is false while the resize keeps the aspect ratio; frames would have "
                                               "no fixed size (SkillGPT needs one: a crop_size or a height/width size)")
    return rules


def processor_rules(processor: Optional[str]) -> Optional[PixelRules]:
    """``data.video.processor`` -> its rules; None for ImageBind's reference preprocessing (null, auto)."""
    if processor is None or processor == AUTO:
        return None
    return read_rules(processor)


def resized_size(rules: PixelRules, height: int, width: int) -> tuple[int, int]:
    """(height, width) after the processor's resize (transformers' size arithmetic)."""
    if not rules.do_resize:
        return height, width
    if rules.shortest_edge is None:
        return int(rules.height), int(rules.width)  # type: ignore[arg-type]
    if rules.longest_edge:  # TorchvisionBackend.resize: shortest_edge and longest_edge
        from transformers.image_transforms import get_size_with_aspect_ratio

        return get_size_with_aspect_ratio((height, width), rules.shortest_edge, rules.longest_edge)
    short, long = (width, height) if width <= height else (height, width)  # get_resize_output_image_size
    new_short, new_long = rules.shortest_edge, int(rules.shortest_edge * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def _pad_for_crop(x: Tensor, crop: tuple[int, int]) -> Tensor:
    """Zero padding the processor's centre crop adds when the frame is smaller than the crop."""
    from torchvision.transforms.v2 import functional as tvF

    (h, w), (ch, cw) = x.shape[-2:], crop
    if ch <= h and cw <= w:
        return x
    ltrb = [max(cw - w, 0) // 2, max(ch - h, 0) // 2, (max(cw - w, 0) + 1) // 2, (max(ch - h, 0) + 1) // 2]
    return tvF.pad(x, ltrb, fill=0)


def crop_boxes(height: int, width: int, crop: tuple[int, int], num_crops: int) -> list[tuple[int, int]]:
    """(top, left) of the crops: the processor's centre crop; for 3 also both ends of the long side."""
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    top, left = int((height - crop[0]) / 2.0), int((width - crop[1]) / 2.0)
    if num_crops == 1:
        return [(top, left)]
    if height > width:
        return [(0, left), (top, left), (height - crop[0], left)]
    return [(top, 0), (top, left), (top, width - crop[1])]


def _normalise(x: Tensor, rules: PixelRules) -> Tensor:
    """uint8 -> float32 pixels, rescale and normalise fused as TorchvisionBackend.rescale_and_normalize."""
    x = x.to(torch.float32)
    if rules.do_normalize:
        factor = (1.0 / rules.rescale_factor) if rules.do_rescale else 1.0
        mean = (torch.tensor(rules.mean) * factor).view(3, 1, 1)
        std = (torch.tensor(rules.std) * factor).view(3, 1, 1)
        return x.sub_(mean).div_(std)
    return x * rules.rescale_factor if rules.do_rescale else x


def preprocess_frames(frames: Tensor, rules: PixelRules, num_crops: int = 1) -> Tensor:
    """uint8 [F, 3, H, W] -> float32 [num_crops, F, 3, h, w] (crop-major)."""
    from torchvision.transforms.v2 import functional as tvF

    x = frames.contiguous()
    if rules.do_resize:
        mode = getattr(tvF.InterpolationMode, RESAMPLE[rules.resample])
        x = tvF.resize(x, list(resized_size(rules, *x.shape[-2:])), interpolation=mode, antialias=True)
    if rules.do_center_crop:
        crop: tuple[int, int] = rules.crop  # type: ignore[assignment]
        x = _pad_for_crop(x, crop)
    else:  # a fixed-size resize is the frame; 3 crops: squares of its short side
        crop = x.shape[-2:] if num_crops == 1 else (min(x.shape[-2:]),) * 2
    x = _normalise(x, rules)
    return torch.stack([x[..., t:t + crop[0], l:l + crop[1]] for t, l in crop_boxes(*x.shape[-2:], crop, num_crops)])


def preprocess_clips(frames: Tensor, clips: list[list[int]], wanted: list[int], rules: PixelRules,
                     num_crops: int) -> Tensor:
    """uint8 [F, H, W, 3] (row r = frame ``wanted[r]``) -> float32 [num_clips * num_crops, 3, T, h, w],
    clip-major; every frame is processed once however many clips share it."""
    x = preprocess_frames(frames.permute(0, 3, 1, 2), rules, num_crops)  # [K, F, 3, h, w]
    position = {frame: row for row, frame in enumerate(wanted)}
    out = [x[k, [position[i] for i in clip]].transpose(0, 1) for clip in clips for k in range(num_crops)]
    return torch.stack(out).contiguous()


def load_image(path: Path, rules: PixelRules, frames_per_clip: int) -> Tensor:
    """An image as a one-clip video [1, 3, T, h, w]: RGB as the processor converts it (transparency
    composited on white), one centre crop, the frame repeated T times."""
    from PIL import Image
    from transformers.image_transforms import convert_to_rgb

    with Image.open(path) as img:
        rgb = convert_to_rgb(img, return_numpy=True)
    frame = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
    pixels = preprocess_frames(frame, rules)[0, 0]  # [3, h, w]
    return pixels.unsqueeze(1).expand(-1, frames_per_clip, -1, -1).unsqueeze(0).contiguous()
