"""`pool` projector (VideoGPT+ pooling levels) and helpers shared by the structured projectors."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from skillgpt.config.schema import ProjectorConfig
from skillgpt.models.layout import TokenLayout


def mlp2x_gelu(in_dim: int, out_dim: int) -> nn.Sequential:
    """LLaVA-1.5 `mlp2x_gelu`: Linear -> GELU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def require_at_least(field: str, value: int, minimum: int = 1) -> int:
    """Return `value` if it is an int >= `minimum`, else raise a ValueError naming the config field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model.projector.{field} must be an integer >= {minimum}, got {value!r}")
    return value


def require_tokens(name: str, layout: TokenLayout) -> None:
    """Raise if `layout` has no tokens per group (nothing to attend to or average)."""
    if layout.per_group < 1 or layout.groups < 1 or layout.views < 1:
        raise ValueError(f"projector {name!r} needs at least one token per group, got {layout}")


def check_input(name: str, x: torch.Tensor, layout: TokenLayout) -> None:
    """Raise a ValueError unless `x` is [B, layout.num_tokens, D]."""
    if x.dim() != 3:
        raise ValueError(f"projector {name!r} expects [B, N, D] features, got shape {tuple(x.shape)}")
    if x.shape[1] != layout.num_tokens:
        raise ValueError(
            f"projector {name!r}: got {x.shape[1]} tokens but its layout {layout} has {layout.num_tokens}"
        )


def pooled_grid(grid: int, pool: int) -> int:
    """Side of the pooled grid: max(1, round(grid / pool)); a grid of 0 stays 0."""
    return 0 if grid == 0 else max(1, round(grid / pool))


class PoolProjector(nn.Module):
    """Adaptive-average-pool each group's patch grid to g' x g' (prefix tokens kept), then mlp2x_gelu
    (``pool_after_mlp``: mlp2x_gelu on every token first, then the pooling, as VideoGPT+).

    Views are treated like more groups. N' = views * groups * (prefix + g'^2).
    """

    def __init__(self, in_dim: int, out_dim: int, layout: TokenLayout, pool: int, mlp_first: bool = False) -> None:
        super().__init__()
        self.layout = layout
        self.pool = require_at_least("pool", pool)
        self.mlp_first = mlp_first  # VideoGPT+ projects every token, then pools (arch.py project())
        self.mlp = mlp2x_gelu(in_dim, out_dim)

    def output_tokens(self, layout: TokenLayout) -> int:
        return layout.views * layout.groups * (layout.prefix + pooled_grid(layout.grid, self.pool) ** 2)

    def forward(self, x: torch.Tensor, layout: TokenLayout | None = None) -> torch.Tensor:
        """`layout` (default: the one built for) lets one projector serve videos and images alike."""
        layout = layout or self.layout
        check_input("pool", x, layout)
        if self.mlp_first:
            return self._pool(self.mlp(x), layout)
        return self.mlp(self._pool(x, layout))

    def _pool(self, x: torch.Tensor, lay: TokenLayout) -> torch.Tensor:
        (b, _, d) = x.shape
        g, g2 = lay.grid, pooled_grid(lay.grid, self.pool)
        if g2 == g:
            return x
        x = x.reshape(b * lay.views * lay.groups, lay.per_group, d)
        prefix, patches = x[:, : lay.prefix], x[:, lay.prefix :]
        # [BG, g*g, D] row-major -> [BG, D, g, g] -> pooled [BG, D, g', g'] -> [BG, g'*g', D]
        grid = patches.reshape(-1, g, g, d).permute(0, 3, 1, 2)
        pooled = F.adaptive_avg_pool2d(grid, g2).flatten(2).transpose(1, 2)
        return torch.cat([prefix, pooled], dim=1).reshape(b, -1, d)


def build_pool(cfg: ProjectorConfig, in_dim: int, out_dim: int, layout: TokenLayout) -> PoolProjector:
    return PoolProjector(in_dim, out_dim, layout, cfg.pool, mlp_first=cfg.pool_after_mlp)
