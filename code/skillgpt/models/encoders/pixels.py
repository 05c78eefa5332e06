"""What the native (non-Hugging-Face) encoders share: the pixel statistics they are fed vs the ones they expect,
resizing frames to their image size, reading original checkpoint files and an exact load of their tensors, with
errors naming the file."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skillgpt.models.encoders.hf import _affine, _floats
from skillgpt.pixel_rules import processor_rules

Affine = tuple[list[float], list[float]]


def pixel_affines(cfg: Any, video: Any, mean: Sequence[float], std: Sequence[float]) -> tuple[Affine, Affine]:
    """(data, model) affines ``u8 * scale + offset``: the data's pixel rules (``data.video``) and the encoder's
    statistics (``model.encoder.mean/std``, default `mean` / `std`)."""
    rules = processor_rules(video.processor)
    data = rules.affine() if rules is not None else _affine(
        _floats(video.mean, 3, "data.video.mean"), _floats(video.std, 3, "data.video.std"))
    mean = cfg.mean if cfg.mean is not None else mean
    std = cfg.std if cfg.std is not None else std
    return data, _affine(_floats(mean, 3, "model.encoder.mean"), _floats(std, 3, "model.encoder.std"))


def to_encoder_pixels(frames: Tensor, data: Affine, model: Affine, size: int) -> Tensor:
    """Frames [N, C, H, W] (float32) in the data's normalisation -> the encoder's, resized to size x size
    (bilinear, antialiased) when they are not."""
    if not all(math.isclose(a, b, rel_tol=1e-6) for d, m in zip(data, model) for a, b in zip(d, m)):
        d_scale, d_offset, m_scale, m_offset = (
            torch.tensor(v, device=frames.device).view(1, -1, 1, 1) for v in (*data, *model))
        frames = (frames - d_offset) / d_scale * m_scale + m_offset
    if frames.shape[-2:] != (size, size):
        frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return frames


def read_state(path: str | Path, wrappers: Sequence[str] = ("model",)) -> dict[str, Tensor]:
    """A flat state dict from a safetensors file or a ``torch.save``d dict, read without running pickled code; the
    first of `wrappers` present (e.g. ``{"model": ...}``, DeepSpeed's ``{"module": ...}``) is unwrapped."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # not a zip checkpoint (mmap) or pickled code
        try:
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception:
            raise ValueError(f"{path}: not a tensor checkpoint readable without running pickled code ({err})") from err
    wrapper = next((w for w in wrappers if isinstance(raw, Mapping) and isinstance(raw.get(w), Mapping)), None)
    if wrapper is not None:
        raw = raw[wrapper]
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a dict of tensors, found {type(raw).__name__}")
    return {k: v for k, v in raw.items() if isinstance(v, Tensor)}


def load_exact(path: Path, module: nn.Module, state: dict[str, Tensor]) -> None:
    """Load `state` into `module`: every tensor of the module present with its shape (extra ones ignored)."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"{path}: no tensors for {missing[:8]}")
    wrong = [f"{k}: {tuple(v.shape)} != {tuple(expected[k].shape)}" for k, v in state.items()
             if k in expected and v.shape != expected[k].shape]
    if wrong:
        raise ValueError(f"{path}: tensors of the wrong shape ({'; '.join(wrong[:4])})")
    module.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)


class FrozenTokenEncoder(nn.Module):
    """Base of the native token encoders: `clip_tokens` output only, always in eval mode, no gradients."""

    name = "encoder"

    def require_tokens_output(self, cfg: Any) -> None:
        if cfg.output != "clip_tokens":
            raise ValueError(f"model.encoder.output: {self.name} only yields tokens ('clip_tokens'), got {cfg.output!r}")

    def freeze(self) -> None:
        """No gradients, eval mode (called at the end of the subclass's constructor)."""
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTokenEncoder":
        """The encoder is frozen: it always stays in eval mode."""
        return super().train(False)

    def layout(self, num_clips: int, frames_per_clip: int = 2, crops: int = 1) -> Any:
        raise NotImplementedError

    def tokens_per_video(self, num_clips: int, frames_per_clip: int = 2, crops: int = 1) -> int:
        return self.layout(num_clips, frames_per_clip, crops).num_tokens

    @staticmethod
    def video_batch(video: Tensor, crops: int) -> Tensor:
        """[B, S * crops, C, T, H, W] clip-major, or [B, C, T, H, W] as one clip -> the 6-d form (checked)."""
        if video.ndim == 5:
            video = video.unsqueeze(1)
        if video.ndim != 6 or crops < 1 or video.shape[1] % crops:
            raise ValueError(f"expected video [B, S * crops, C, T, H, W] (crops={crops}), got {tuple(video.shape)}")
        return video
