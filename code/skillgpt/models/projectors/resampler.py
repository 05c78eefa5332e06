"""`resampler` projector: learned queries cross-attend to each group (Perceiver resampler / Q-Former)."""
from __future__ import annotations

import math

import torch
from torch import nn

from skillgpt.config.schema import ProjectorConfig
from skillgpt.models.layout import TokenLayout
from skillgpt.models.projectors.pool import check_input, require_at_least, require_tokens


class ResamplerLayer(nn.Module):
    """Pre-LN cross-attention (queries -> group tokens) with residual, then a pre-LN MLP with residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(width)
        self.norm_kv = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(kv)
        q = q + self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        return q + self.mlp(self.norm_mlp(q))


class ResamplerProjector(nn.Module):
    """`num_queries` learned queries per group (clip) attend only to that group's tokens.

    Internal width = in_dim rounded up to a multiple of `heads` (tokens enter through a Linear).
    Groups (and views) are folded into the batch, so all are resampled in parallel; no positional
    embeddings are added (encoder features already carry them, and groups never mix).
    N' = views * groups * num_queries, independent of the grid size.
    """

    def __init__(
        self, in_dim: int, out_dim: int, layout: TokenLayout, num_queries: int, heads: int, layers: int
    ) -> None:
        super().__init__()
        require_tokens("resampler", layout)
        self.layout = layout
        self.num_queries = require_at_least("num_queries", num_queries)
        heads = require_at_least("heads", heads)
        width = heads * math.ceil(in_dim / heads)
        self.proj_in = nn.Linear(in_dim, width)
        self.queries = nn.Parameter(torch.randn(self.num_queries, width) * 0.02)
        layers = require_at_least("layers", layers)
        self.layers = nn.ModuleList(ResamplerLayer(width, heads) for _ in range(layers))
        self.norm_out = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, out_dim)

    def output_tokens(self, layout: TokenLayout) -> int:
        return layout.views * layout.groups * self.num_queries

    def forward(self, x: torch.Tensor, layout: TokenLayout | None = None) -> torch.Tensor:
        """`layout` (default: the one built for) lets one projector serve videos and images alike."""
        layout = layout or self.layout
        check_input("resampler", x, layout)
        b, lay = x.shape[0], layout
        kv = self.proj_in(x).reshape(b * lay.views * lay.groups, lay.per_group, -1)
        q = self.queries.expand(kv.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, kv)
        return self.proj_out(self.norm_out(q)).reshape(b, self.output_tokens(lay), -1)


def build_resampler(cfg: ProjectorConfig, in_dim: int, out_dim: int, layout: TokenLayout) -> nn.Module:
    return ResamplerProjector(in_dim, out_dim, layout, cfg.num_queries, cfg.heads, cfg.layers)
