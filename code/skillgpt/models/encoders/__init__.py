"""Encoder registry: media tensor -> visual tokens [B, N, D]. Every encoder is frozen.

A builder takes ``(cfg: EncoderConfig, video: VideoConfig, on_meta: bool)``: ``video`` carries the
pixel statistics and resolution the data pipeline produces (encoders that re-normalise need them).
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from skillgpt.config.schema import EncoderConfig, VideoConfig


def _imagebind(cfg: EncoderConfig, video: VideoConfig, on_meta: bool) -> nn.Module:
    from skillgpt.models.encoders.imagebind_encoder import ImageBindVideoEncoder

    return ImageBindVideoEncoder(cfg, on_meta=on_meta)


def _hf_image(cfg: EncoderConfig, video: VideoConfig, on_meta: bool) -> nn.Module:
    from skillgpt.models.encoders.hf import HFImageEncoder

    return HFImageEncoder(cfg, video, on_meta=on_meta)


def _hf_video(cfg: EncoderConfig, video: VideoConfig, on_meta: bool) -> nn.Module:
    from skillgpt.models.encoders.hf import HFVideoEncoder

    return HFVideoEncoder(cfg, video, on_meta=on_meta)


def _eva_clip(cfg: EncoderConfig, video: VideoConfig, on_meta: bool) -> nn.Module:
    from skillgpt.models.encoders.eva_clip import EvaClipEncoder

    return EvaClipEncoder(cfg, video, on_meta=on_meta)


def _internvideo2(cfg: EncoderConfig, video: VideoConfig, on_meta: bool) -> nn.Module:
    from skillgpt.models.encoders.internvideo2 import InternVideo2Encoder

    return InternVideo2Encoder(cfg, video, on_meta=on_meta)


ENCODERS: dict[str, Callable[[EncoderConfig, VideoConfig, bool], nn.Module]] = {
    "imagebind": _imagebind,
    "hf_image": _hf_image,  # CLIP / SigLIP vision tower per frame (model.encoder.path: local folder)
    "hf_video": _hf_video,  # VideoMAE / TimeSformer per clip (model.encoder.path: local folder)
    "eva_clip": _eva_clip,
    # InternVideo2 1B stage-2 per 4-frame clip: VideoGPT+'s video tower (model.encoder.checkpoint: local .pt)
    "internvideo2": _internvideo2,  # EVA-CLIP ViT-g (+ BLIP-2 Q-Former) per frame: MiniGPT-4 / MiniGPT-v2 (LAVIS files)
}


def build_encoder(cfg: EncoderConfig, video: VideoConfig, on_meta: bool = False) -> nn.Module:
    """Build the encoder named by `model.encoder.name` (on_meta: architecture only, no weights)."""
    if cfg.name not in ENCODERS:
        raise KeyError(f"model.encoder.name: unknown encoder {cfg.name!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[cfg.name](cfg, video, on_meta)
