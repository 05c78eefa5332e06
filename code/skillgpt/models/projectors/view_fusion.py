"""`view_fusion` projector: gated cross-attention across camera views (SkillFormer / ProfVLM style)."""
from __future__ import annotations

import torch
from torch import nn

from skillgpt.config.schema import ProjectorConfig
from skillgpt.models.layout import TokenLayout
from skillgpt.models.projectors.pool import check_input, mlp2x_gelu, require_at_least, require_tokens


class GatedCrossAttention(nn.Module):
    """Pre-LN cross-attention and MLP, each added through a tanh gate initialised to 0 (Flamingo)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.attn_gate = nn.Parameter(torch.zeros(1))
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_gate = nn.Parameter(torch.zeros(1))

    def forward(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(kv)
        q = q + self.attn_gate.tanh() * self.attn(self.norm_q(q), kv, kv, need_weights=False)[0]
        return q + self.mlp_gate.tanh() * self.mlp(self.norm_mlp(q))


class ViewFusionProjector(nn.Module):
    """Fuse V camera views into one view's worth of tokens.

    Queries: the mean over views of the tokens at each position (a fixed, parameter-free combination,
    so with all gates at 0 the output is mlp2x_gelu(view mean)). Keys/values: every token of every
    view plus a learned embedding of its view index (views need not be pixel-aligned, so each query
    sees all positions of all views; cost O(T * V*T) per head). N' = layout.per_view.
    Attention runs at in_dim, which must be divisible by `heads`.
    """

    def __init__(self, in_dim: int, out_dim: int, layout: TokenLayout, heads: int, layers: int) -> None:
        super().__init__()
        require_tokens("view_fusion", layout)
        heads = require_at_least("heads", heads)
        if in_dim % heads:
            msg = f"model.projector.heads={heads} must divide the encoder width {in_dim} (view_fusion)"
            raise ValueError(msg)
        self.layout = layout
        self.view_embed = nn.Parameter(torch.randn(layout.views, in_dim) * 0.02)
        layers = require_at_least("layers", layers)
        self.layers = nn.ModuleList(GatedCrossAttention(in_dim, heads) for _ in range(layers))
        self.mlp = mlp2x_gelu(in_dim, out_dim)

    def output_tokens(self, layout: TokenLayout) -> int:
        return layout.per_view

    def forward(self, x: torch.Tensor, layout: TokenLayout | None = None) -> torch.Tensor:
        """`layout` (default: the one built for) lets one projector serve videos and images alike."""
        layout = layout or self.layout
        check_input("view_fusion", x, layout)
        b, d, lay = x.shape[0], x.shape[2], layout
        views = x.reshape(b, lay.views, lay.per_view, d)
        q = views.mean(dim=1)  # [B, T, D]
        view_embed = self.view_embed[: lay.views]  # an image (one view) takes the first view's embedding
        kv = (views + view_embed[None, :, None, :]).reshape(b, lay.num_tokens, d)
        for layer in self.layers:
            q = layer(q, kv)
        return self.mlp(q)


def build_view_fusion(cfg: ProjectorConfig, in_dim: int, out_dim: int, layout: TokenLayout) -> nn.Module:
    return ViewFusionProjector(in_dim, out_dim, layout, cfg.heads, cfg.layers)
