"""Hugging Face pixel rules: video frames and images preprocessed exactly as a model folder's
``preprocessor_config.json`` says, as its ``transformers`` image / video processor does (torchvision backend,
the one ``AutoImageProcessor`` / ``AutoVideoProcessor`` pick in transformers 5).

The rules themselves live in skillgpt.pixel_rules: ``read_rules`` resolves the JSON with the processor class it names (class
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

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from skillgpt.pixel_rules import RESAMPLE, PixelRules


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
    """uint8 -> float32 pixels, rescale and normalise fused as TorchvisionBackend.rescale_and_normalize (the
    opencv backend: ``(x * factor - mean) / std`` in float64, as VideoGPT+'s numpy code, then float32)."""
    if rules.backend == "opencv":
        mean, std = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in (rules.mean, rules.std))
        return ((x.to(torch.float64) * rules.rescale_factor - mean) / std).to(torch.float32)
    x = x.to(torch.float32)
    if rules.do_normalize:
        factor = (1.0 / rules.rescale_factor) if rules.do_rescale else 1.0
        mean = (torch.tensor(rules.mean) * factor).view(3, 1, 1)
        std = (torch.tensor(rules.std) * factor).view(3, 1, 1)
        return x.sub_(mean).div_(std)
    return x * rules.rescale_factor if rules.do_rescale else x


def _opencv_resize(frames: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 [F, 3, H, W] -> [F, 3, h, w] by ``cv2.resize`` (INTER_LINEAR, OpenCV's fixed-point uint8 path)."""
    import cv2

    height, width = size
    out = [cv2.resize(np.ascontiguousarray(f.permute(1, 2, 0).numpy()), (width, height),
                      interpolation=cv2.INTER_LINEAR) for f in frames]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def preprocess_frames(frames: Tensor, rules: PixelRules, num_crops: int = 1) -> Tensor:
    """uint8 [F, 3, H, W] -> float32 [num_crops, F, 3, h, w] (crop-major)."""
    from torchvision.transforms.v2 import functional as tvF

    x = frames.contiguous()
    if rules.do_resize and rules.backend == "opencv":
        x = _opencv_resize(x, resized_size(rules, *x.shape[-2:]))
    elif rules.do_resize:
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
