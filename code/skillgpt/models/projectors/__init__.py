"""Projector registry: visual features [B, N, D_enc] -> LLM embeddings [B, N, D_llm]."""
from __future__ import annotations

from typing import Callable

from torch import nn

from skillgpt.config.schema import ProjectorConfig


def _linear(in_dim: int, out_dim: int) -> nn.Module:
    """PandaGPT: one linear map."""
    return nn.Linear(in_dim, out_dim)


def _mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Module:
    """LLaVA-1.5: Linear -> GELU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


PROJECTORS: dict[str, Callable[[int, int], nn.Module]] = {
    "linear": _linear,
    "mlp2x_gelu": _mlp2x_gelu,
}


def build_projector(cfg: ProjectorConfig, in_dim: int, out_dim: int) -> nn.Module:
    """Build the projector named by `model.projector.name`."""
    if cfg.name not in PROJECTORS:
        raise KeyError(f"model.projector.name: unknown projector {cfg.name!r}; known: {sorted(PROJECTORS)}")
    return PROJECTORS[cfg.name](in_dim, out_dim)
