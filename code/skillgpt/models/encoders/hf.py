"""Frozen Hugging Face encoders loaded from local folders: per-frame image towers (CLIP, SigLIP) and
video transformers (VideoMAE, TimeSformer).

The architecture is picked from the folder's ``config.json`` ``model_type`` through the explicit tables
``IMAGE_MODELS`` / ``VIDEO_MODELS`` (never from folder names).

Pixels: when the data follow this model's own ``preprocessor_config.json`` (``data.video.processor``, which
the config loader points at ``model.encoder.path`` by default; data/hf_preprocessing.py), they reach the
model exactly as its transformers processor makes them. Otherwise (ImageBind's preprocessing, or another
model's rules, e.g. a context encoder) the encoder maps the data's normalisation to the model's (its
processor's rescale/mean/std, else ``model.encoder.mean/std``) and resizes (bilinear, antialiased) to the
model's ``image_size``: an approximation of what the model was trained to see.

Spatial crops (``data.video.num_crops: 3``) are encoded like ImageBind's ``clip_tokens``: every crop of a
clip gives its own token groups, clip-major with a clip's crops in crop order (they see different parts
of the frame, so their tokens are kept, not averaged).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from torch import Tensor, nn

from skillgpt.pixel_rules import PixelRules, processor_rules, read_rules
from skillgpt.models.layout import TokenLayout


@dataclass(frozen=True)
class ModelSpec:
    """How to load and read one Hugging Face ``model_type``."""

    model_cls: str  # transformers class name, loaded with from_pretrained(path)
    has_cls: bool  # the token sequence starts with one class token
    # Modules whose weights a checkpoint may lack without changing any hidden state (final norms,
    # pooling heads), matched as whole components of the parameter name (prefixes differ by version).
    optional_modules: tuple[str, ...] = ()


_CLIP = ModelSpec("CLIPVisionModel", True, ("post_layernorm",))
_SIGLIP = ModelSpec("SiglipVisionModel", False, ("post_layernorm", "head"))
IMAGE_MODELS: dict[str, ModelSpec] = {
    "clip": _CLIP,
    "clip_vision_model": _CLIP,
    "siglip": _SIGLIP,
    "siglip_vision_model": _SIGLIP,
}
VIDEO_MODELS: dict[str, ModelSpec] = {
    "videomae": ModelSpec("VideoMAEModel", False, ("layernorm", "fc_norm")),
    "timesformer": ModelSpec("TimesformerModel", True, ("layernorm",)),
}


def _floats(values: Any, channels: int, what: str) -> list[float]:
    """A per-channel statistic as `channels` floats (a single number is broadcast)."""
    if isinstance(values, (int, float)):
        values = [values] * channels
    out = [float(v) for v in values]
    if len(out) != channels:
        raise ValueError(f"{what}: expected {channels} values, got {out}")
    return out


def _affine(mean: list[float], std: list[float]) -> tuple[list[float], list[float]]:
    """(scale, offset) of ``(u8 / 255 - mean) / std`` = u8 * scale + offset."""
    return [1.0 / (255.0 * s) for s in std], [-m / s for m, s in zip(mean, std)]


class HFEncoderBase(nn.Module):
    """Shared loading, re-normalisation, grid pooling and freezing of the Hugging Face encoders."""

    name = "hf"
    models: dict[str, ModelSpec] = {}

    def __init__(self, cfg: Any, video: Any, on_meta: bool = False) -> None:
        super().__init__()
        if cfg.output != "clip_tokens":
            raise ValueError(
                f"model.encoder.output: {self.name} only yields tokens ('clip_tokens'), got {cfg.output!r}"
            )
        if int(cfg.pool) < 1:
            raise ValueError(f"model.encoder.pool must be >= 1, got {cfg.pool}")
        self.folder = self._check_folder(cfg.path)
        config_file = self.folder / "config.json"
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type not in self.models:
            raise ValueError(
                f"{config_file}: model_type {model_type!r} is not supported by encoder {self.name!r}; "
                f"supported model_type values: {sorted(self.models)}"
            )
        self.model_type: str = model_type
        self.spec = self.models[model_type]
        model_cls = getattr(transformers, self.spec.model_cls)
        if on_meta:  # architecture only: no weights are read
            config = model_cls.config_class.from_pretrained(self.folder)
            with torch.device("meta"):
                model = model_cls._from_config(config, dtype=torch.float32)
        else:
            model, info = model_cls.from_pretrained(self.folder, dtype=torch.float32, output_loading_info=True)
            optional = set(self.spec.optional_modules)
            missing = sorted(k for k in info["missing_keys"] if not optional & set(k.split(".")))
            if missing:
                more = " ..." if len(missing) > 8 else ""
                raise ValueError(
                    f"model.encoder.path: {self.folder} lacks weights of {self.spec.model_cls}: {missing[:8]}{more}"
                )
        self.model = model
        self.config = model.config
        channels = int(getattr(self.config, "num_channels", 3))
        self.image_size = self._int_size(self.config.image_size)
        self.grid = self.image_size // self._int_size(self.config.patch_size)
        self.pool = int(cfg.pool)
        self.pooled_grid = max(1, round(self.grid / self.pool))
        self.out_dim = int(self.config.hidden_size)
        layers = int(self.config.num_hidden_layers)
        self.select_layer = int(cfg.select_layer)
        if not -(layers + 1) <= self.select_layer <= layers:
            raise ValueError(f"model.encoder.select_layer {self.select_layer} is out of range for {layers} layers "
                             f"({layers + 1} hidden states: embeddings + one per layer)")
        has_rules = (self.folder / "preprocessor_config.json").is_file()
        self.rules: PixelRules | None = read_rules(self.folder) if has_rules else None
        data_rules = processor_rules(video.processor)
        # pixels made by this model's own processor rules: fed as they are
        self.exact = self.rules is not None and data_rules == self.rules
        if data_rules is None:  # ImageBind: x = (u8 / 255 - mean) / std
            self.data_affine = _affine(_floats(video.mean, channels, "data.video.mean"),
                                       _floats(video.std, channels, "data.video.std"))
        else:
            self.data_affine = data_rules.affine()
        self.model_affine = self.rules.affine() if self.rules is not None else _affine(*(
            _floats(v, channels, f"model.encoder.{k}") for k, v in zip(("mean", "std"), self._fallback_stats(cfg))))
        size = data_rules.output_size() if data_rules is not None else None
        if self.exact and size != (self.image_size, self.image_size):
            warnings.warn(f"{self.rules.source}: frames of {size[0]}x{size[1]} (crop_size / size) but {config_file} "
                          f"has image_size {self.image_size}: frames are resized (bilinear, antialiased) to it, "
                          "unlike transformers (whose model would refuse them)", stacklevel=2)
        self.requires_grad_(False)
        super().train(False)

    @staticmethod
    def _check_folder(path: str | None) -> Path:
        if not path:
            raise ValueError("model.encoder.path is not set: Hugging Face encoders load from a local folder")
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"model.encoder.path: folder {folder} does not exist")
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"model.encoder.path: {folder} has no config.json")
        return folder

    @staticmethod
    def _int_size(size: Any) -> int:
        if isinstance(size, int):
            return size
        h, w = size
        if h != w:
            raise ValueError(f"only square inputs are supported, the model expects {h}x{w}")
        return int(h)

    def _fallback_stats(self, cfg: Any) -> tuple[Any, Any]:
        """A folder without preprocessor_config.json: the pixel mean/std of model.encoder.mean/std."""
        mean, std = getattr(cfg, "mean", None), getattr(cfg, "std", None)
        if mean is not None and std is not None:
            return mean, std
        raise FileNotFoundError(
            f"model.encoder.path: {self.folder} has no preprocessor_config.json; "
            "add it or set model.encoder.mean and model.encoder.std"
        )

    def train(self, mode: bool = True) -> "HFEncoderBase":
        """The encoder is frozen: it always stays in eval mode."""
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def weight_files(self) -> list[str]:
        """Files that determine the features: weights (*.safetensors, *.bin), config.json and, when
        present, preprocessor_config.json (the pixel rules)."""
        weights = sorted(p for ext in ("*.safetensors", "*.bin") for p in self.folder.glob(ext))
        extra = [self.folder / "config.json", self.folder / "preprocessor_config.json"]
        return [str(p) for p in [*weights, *extra] if p.is_file()]

    def tokens_per_video(self, num_clips: int, frames_per_clip: int = 2, crops: int = 1) -> int:
        """Number of tokens N that ``forward`` yields for a video of ``num_clips`` clips of ``crops`` crops."""
        return self.layout(num_clips, frames_per_clip, crops).num_tokens

    def layout(self, num_clips: int, frames_per_clip: int = 2, crops: int = 1) -> TokenLayout:
        raise NotImplementedError

    def _prepare(self, frames: Tensor) -> Tensor:
        """Frames [N, C, H, W] as the data made them -> the model's pixels and size, model dtype."""
        x = frames.to(device=self.device, dtype=torch.float32)
        if not self.exact:  # data pixel = u8 * d_scale + d_offset -> u8 * m_scale + m_offset
            d_scale, d_offset, m_scale, m_offset = (
                torch.tensor(v, device=x.device).view(1, -1, 1, 1) for v in (*self.data_affine, *self.model_affine))
            x = (x - d_offset) / d_scale * m_scale + m_offset
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return x.to(self.dtype)

    def _pool_grid(self, patches: Tensor) -> Tensor:
        """Patch tokens [N, g*g, D] (row-major) -> [N, g'*g', D] by adaptive average pooling."""
        if self.pooled_grid == self.grid:
            return patches
        n, _, width = patches.shape
        grid = patches.transpose(1, 2).reshape(n, width, self.grid, self.grid)
        return F.adaptive_avg_pool2d(grid, self.pooled_grid).flatten(2).transpose(1, 2)

    def _hidden(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[self.select_layer]

    @staticmethod
    def _as_clips(video: Tensor, crops: int = 1) -> Tensor:
        """[B, S * crops, C, T, H, W] (or [B, C, T, H, W] as one clip), checked."""
        if video.ndim == 5:
            video = video.unsqueeze(1)
        if video.ndim != 6:
            raise ValueError(f"expected video [B, S, C, T, H, W], got {tuple(video.shape)}")
        if crops < 1 or video.shape[1] % crops:
            raise ValueError(f"video has {video.shape[1]} clip rows, not num_clips x crops for crops={crops} "
                             "(expected data.video.num_crops rows per clip, clip-major)")
        return video


class HFImageEncoder(HFEncoderBase):
    """Per-frame image tower (CLIP, SigLIP): every frame of every clip is one token group.

    ``forward(video [B, S, C, T, H, W]) -> [B, S*T*(prefix + g'^2), hidden_size]`` with the tokens of
    ``hidden_states[select_layer]``; prefix = 1 (the class token) when the model has one and
    ``keep_cls`` is true, else 0 (SigLIP has none); frames in time order, clip-major (S counts
    clip x crop rows: a clip's crops are consecutive).
    """

    name = "hf_image"
    models = IMAGE_MODELS

    def __init__(self, cfg: Any, video: Any, on_meta: bool = False) -> None:
        super().__init__(cfg, video, on_meta)
        self.model_prefix = int(self.spec.has_cls)
        self.keep_cls = bool(cfg.keep_cls) and self.spec.has_cls

    def layout(self, num_clips: int, frames_per_clip: int = 2, crops: int = 1) -> TokenLayout:
        """One group per frame of every crop: ``num_clips * crops * frames_per_clip`` groups."""
        return TokenLayout(groups=num_clips * crops * frames_per_clip, prefix=int(self.keep_cls),
                           grid=self.pooled_grid)

    @torch.no_grad()
    def forward(self, video: Tensor, crops: int = 1) -> Tensor:
        """video [B, S * crops, C, T, H, W] clip-major (or [B, C, T, H, W] as one clip) -> [B, N, D]."""
        video = self._as_clips(video, crops)
        b, s, c, t = video.shape[:4]
        frames = video.permute(0, 1, 3, 2, 4, 5).reshape(b * s * t, c, *video.shape[-2:])
        hidden = self._hidden(self._prepare(frames))  # [F, model_prefix + g*g, D]
        patches = self._pool_grid(hidden[:, self.model_prefix:])
        out = torch.cat([hidden[:, :1], patches], dim=1) if self.keep_cls else patches
        return out.reshape(b, s * t * out.shape[1], out.shape[2])


class HFVideoEncoder(HFEncoderBase):
    """Video transformer (VideoMAE, TimeSformer) run on each clip.

    A clip's T frames are resampled to the model's ``num_frames`` (indices floor(linspace(0, T-1,
    num_frames))) when T differs. Tokens of ``hidden_states[select_layer]`` are arranged as T' temporal
    slices of g x g patches (T' = num_frames // tubelet_size for VideoMAE, num_frames for TimeSformer),
    each slice pooled to g' x g'. TimeSformer's class token is always dropped (``keep_cls`` is ignored)
    so that every group is a pure patch grid. ``temporal_pool`` averages the T' slices of a clip.

    ``forward(video [B, S, C, T, H, W]) -> [B, S * T'' * g'^2, hidden_size]``, T'' = 1 if temporal_pool
    else T'.
    """

    name = "hf_video"
    models = VIDEO_MODELS

    def __init__(self, cfg: Any, video: Any, on_meta: bool = False) -> None:
        super().__init__(cfg, video, on_meta)
        self.num_frames = int(self.config.num_frames)
        self.tubelet = int(getattr(self.config, "tubelet_size", 1)) if self.model_type == "videomae" else 1
        if self.num_frames % self.tubelet:
            raise ValueError(
                f"{self.folder}: num_frames {self.num_frames} is not a multiple of tubelet_size {self.tubelet}"
            )
        self.slices = self.num_frames // self.tubelet
        self.temporal_pool = bool(getattr(cfg, "temporal_pool", False))

    def layout(self, num_clips: int, frames_per_clip: int = 2, crops: int = 1) -> TokenLayout:
        """One group per temporal slice of each clip's crop (or per crop with ``temporal_pool``); the clip's
        frames are resampled to the model's ``num_frames``, so ``frames_per_clip`` does not change it."""
        groups = num_clips * crops * (1 if self.temporal_pool else self.slices)
        return TokenLayout(groups=groups, prefix=0, grid=self.pooled_grid)

    def _slices(self, hidden: Tensor, clips: int) -> Tensor:
        """Hidden states of ``clips`` clips -> [clips, T', g*g, D] in (time, row, column) order."""
        gg, width = self.grid * self.grid, hidden.shape[-1]
        if self.model_type == "videomae":
            # Conv3d tubelets flattened from [D, T', g, g]: time-major, then rows, then columns.
            return hidden.reshape(clips, self.slices, gg, width)
        # TimeSformer: "space_only" runs frames as a batch [clips * T, 1 + g*g, D] (CLS per frame);
        # the other attention types give one sequence [clips, 1 + g*g*T, D]: CLS, then patch-major
        # tokens with time innermost (TimesformerEmbeddings: view(B, patches, T, D)).
        if self.config.attention_type == "space_only":
            return hidden[:, 1:].reshape(clips, self.slices, gg, width)
        return hidden[:, 1:].reshape(clips, gg, self.slices, width).transpose(1, 2)

    @torch.no_grad()
    def forward(self, video: Tensor, crops: int = 1) -> Tensor:
        """video [B, S * crops, C, T, H, W] clip-major (or [B, C, T, H, W] as one clip) -> [B, N, D]."""
        video = self._as_clips(video, crops)
        b, s, c, t = video.shape[:4]
        clips = video.flatten(0, 1)  # [B*S, C, T, H, W]
        if t != self.num_frames:
            idx = torch.linspace(0, t - 1, self.num_frames).floor().long().to(clips.device)
            clips = clips.index_select(2, idx)
        n = clips.shape[0]
        frames = clips.transpose(1, 2).reshape(n * self.num_frames, c, *clips.shape[-2:])
        x = self._prepare(frames).reshape(n, self.num_frames, c, self.image_size, self.image_size)
        tokens = self._slices(self._hidden(x), n)  # [n, T', g*g, D]
        tokens = self._pool_grid(tokens.flatten(0, 1)).reshape(n, self.slices, -1, tokens.shape[-1])
        if self.temporal_pool:
            tokens = tokens.mean(dim=1, keepdim=True)
        return tokens.reshape(b, -1, tokens.shape[-1])

