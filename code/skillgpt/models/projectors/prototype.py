"""`prototype` projector: soft clustering of a media item's tokens onto learned prototypes."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from skillgpt.config.schema import ProjectorConfig
from skillgpt.models.layout import TokenLayout
from skillgpt.models.projectors.pool import check_input, mlp2x_gelu, require_at_least, require_tokens


class PrototypeProjector(nn.Module):
    """Each token is softly assigned to `num_prototypes` learned prototypes (softmax over prototypes of
    scale * cos(token, prototype), scale = exp(log_scale) learnable, initially 10 i.e. temperature 0.1,
    capped at 100); each prototype emits the assignment-weighted mean of all the item's tokens (all
    views and groups), then mlp2x_gelu. Set-like: invariant to token order. N' = num_prototypes.
    """

    max_log_scale = math.log(100.0)

    def __init__(
        self, in_dim: int, out_dim: int, layout: TokenLayout, num_prototypes: int, eps: float = 1e-6
    ) -> None:
        super().__init__()
        require_tokens("prototype", layout)
        self.layout = layout
        self.num_prototypes = require_at_least("num_prototypes", num_prototypes)
        self.eps = eps
        self.prototypes = nn.Parameter(torch.randn(self.num_prototypes, in_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.mlp = mlp2x_gelu(in_dim, out_dim)

    def output_tokens(self, layout: TokenLayout) -> int:
        return self.num_prototypes

    def assignments(self, x: torch.Tensor) -> torch.Tensor:
        """Soft assignments [B, N, K] of tokens to prototypes (float32, rows sum to 1)."""
        tokens = F.normalize(x.float(), dim=-1)
        protos = F.normalize(self.prototypes.float(), dim=-1)
        scale = self.log_scale.float().clamp(max=self.max_log_scale).exp()
        return torch.softmax(scale * tokens @ protos.t(), dim=-1)

    def forward(self, x: torch.Tensor, layout: TokenLayout | None = None) -> torch.Tensor:
        """`layout` (default: the one built for) lets one projector serve videos and images alike."""
        layout = layout or self.layout
        check_input("prototype", x, layout)
        assign = self.assignments(x)  # [B, N, K]
        weights = assign / assign.sum(dim=1, keepdim=True).clamp_min(self.eps)  # per-prototype weighted mean
        pooled = torch.einsum("bnk,bnd->bkd", weights.to(x.dtype), x)
        return self.mlp(pooled)


def build_prototype(cfg: ProjectorConfig, in_dim: int, out_dim: int, layout: TokenLayout) -> nn.Module:
    return PrototypeProjector(in_dim, out_dim, layout, cfg.num_prototypes)
