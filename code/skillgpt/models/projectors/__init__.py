"""Projector registry: visual features [B, N, D_enc] -> LLM embeddings [B, N', D_llm].

Every projector is built from (config, encoder width, LLM width, the encoder's TokenLayout) and says
how many tokens it emits for that layout (`output_tokens`), which is what the data pipeline inserts.
For a layout of V views x G groups x (P prefix + g*g grid) tokens, N' is:

- linear: Linear per token; N' = N.
- mlp2x_gelu: Linear -> GELU -> Linear per token; N' = N.
- pool: per-group grid pooled to g' = max(1, round(g / pool)), then mlp2x_gelu; N' = V*G*(P + g'^2).
- resampler: `num_queries` learned queries cross-attend to each group; N' = V*G*num_queries.
- prototype: soft-cluster all tokens onto `num_prototypes` prototypes; N' = num_prototypes.
- view_fusion: gated cross-attention of view-mean queries to all views; N' = G*(P + g*g) (one view).
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from skillgpt.config.schema import ProjectorConfig
from skillgpt.models.layout import TokenLayout
from skillgpt.models.projectors.pool import build_pool
from skillgpt.models.projectors.prototype import build_prototype
from skillgpt.models.projectors.resampler import build_resampler
from skillgpt.models.projectors.view_fusion import build_view_fusion


class LinearProjector(nn.Linear):
    """PandaGPT: one linear map per token."""

    def forward(self, x: Tensor, layout: TokenLayout | None = None) -> Tensor:
        return super().forward(x)

    def output_tokens(self, layout: TokenLayout) -> int:
        return layout.num_tokens


class MLPProjector(nn.Sequential):
    """LLaVA-1.5 `mlp2x_gelu`: Linear -> GELU -> Linear per token."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, x: Tensor, layout: TokenLayout | None = None) -> Tensor:
        return super().forward(x)

    def output_tokens(self, layout: TokenLayout) -> int:
        return layout.num_tokens


Builder = Callable[[ProjectorConfig, int, int, TokenLayout], nn.Module]

PROJECTORS: dict[str, Builder] = {
    "linear": lambda cfg, i, o, layout: LinearProjector(i, o),
    "mlp2x_gelu": lambda cfg, i, o, layout: MLPProjector(i, o),
    "pool": build_pool,
    "resampler": build_resampler,
    "prototype": build_prototype,
    "view_fusion": build_view_fusion,
}


def build_projector(cfg: ProjectorConfig, in_dim: int, out_dim: int, layout: TokenLayout) -> nn.Module:
    """Build the projector named by `model.projector.name` for tokens arranged as `layout`."""
    if cfg.name not in PROJECTORS:
        raise KeyError(f"model.projector.name: unknown projector {cfg.name!r}; known: {sorted(PROJECTORS)}")
    return PROJECTORS[cfg.name](cfg, in_dim, out_dim, layout)
