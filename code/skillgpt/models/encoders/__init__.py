"""Encoder registry: media tensor -> visual tokens [B, N, D]. Every encoder is frozen."""
from __future__ import annotations

from typing import Callable

from torch import nn

from skillgpt.config.schema import EncoderConfig


def _imagebind(cfg: EncoderConfig, on_meta: bool) -> nn.Module:
    from skillgpt.models.encoders.imagebind_encoder import ImageBindVideoEncoder

    return ImageBindVideoEncoder(cfg, on_meta=on_meta)


ENCODERS: dict[str, Callable[[EncoderConfig, bool], nn.Module]] = {"imagebind": _imagebind}


def build_encoder(cfg: EncoderConfig, on_meta: bool = False) -> nn.Module:
    """Build the encoder named by `model.encoder.name` (on_meta: architecture only, no weights)."""
    if cfg.name not in ENCODERS:
        raise KeyError(f"model.encoder.name: unknown encoder {cfg.name!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[cfg.name](cfg, on_meta)
