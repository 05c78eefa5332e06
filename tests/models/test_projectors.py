"""Projector registry: token counts, shapes, gradients, dtypes and the math of each structured projector."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skillgpt.config.schema import ProjectorConfig
from skillgpt.models.layout import TokenLayout
from skillgpt.models.projectors import PROJECTORS, build_projector
from skillgpt.models.projectors.pool import pooled_grid

IN, OUT = 8, 6
NEW = ["pool", "resampler", "prototype", "view_fusion"]
LAYOUTS = [
    TokenLayout(groups=g, prefix=p, grid=s, views=v)
    for s, p, g, v in itertools.product([0, 4], [0, 1], [1, 3], [1, 2])
    if p + s > 0
]
RICH = TokenLayout(groups=3, prefix=1, grid=4, views=2)


def make(
    name: str, layout: TokenLayout, seed: int = 0, in_dim: int = IN, out_dim: int = OUT, **kw: int
) -> nn.Module:
    torch.manual_seed(seed)
    cfg = ProjectorConfig(name=name, heads=2, num_queries=3, num_prototypes=5, **kw)
    return build_projector(cfg, in_dim, out_dim, layout)


def feats(layout: TokenLayout, b: int = 2, d: int = IN, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, layout.num_tokens, d, generator=torch.Generator().manual_seed(seed))


def open_gates(model: nn.Module, value: float = 0.7) -> None:
    for name, p in model.named_parameters():
        if name.endswith("_gate"):
            p.data.fill_(value)


def test_registry_keys() -> None:
    assert {"linear", "mlp2x_gelu", *NEW} <= set(PROJECTORS)


@pytest.mark.parametrize("name", sorted(PROJECTORS))
@pytest.mark.parametrize("layout", LAYOUTS, ids=str)
def test_output_shape_matches_output_tokens(name: str, layout: TokenLayout) -> None:
    model = make(name, layout)
    for b in (1, 3):
        y = model(feats(layout, b))
        assert y.shape == (b, model.output_tokens(layout), OUT)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NEW)
def test_wrong_token_count_raises(name: str) -> None:
    model = make(name, RICH)
    with pytest.raises(ValueError, match=rf"{name}.*{RICH.num_tokens - 1}.*{RICH.num_tokens}"):
        model(torch.randn(2, RICH.num_tokens - 1, IN))


@pytest.mark.parametrize("name", sorted(PROJECTORS))
@pytest.mark.parametrize("layout", [RICH, TokenLayout(groups=2, prefix=1, grid=0, views=2)], ids=str)
def test_gradients_reach_every_parameter(name: str, layout: TokenLayout) -> None:
    model = make(name, layout)
    open_gates(model)
    model(feats(layout, 3)).square().sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        # one token per group (grid 0, prefix 1): the resampler's query path is constant by design
        assert p.grad.abs().sum() > 0 or layout.per_group == 1, pname


@pytest.mark.parametrize("name", sorted(PROJECTORS))
def test_bf16_forward(name: str) -> None:
    model = make(name, RICH).to(torch.bfloat16)
    y = model(feats(RICH, 2).to(torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.shape == (2, model.output_tokens(RICH), OUT)
    assert torch.isfinite(y.float()).all()


@pytest.mark.parametrize("name", sorted(PROJECTORS))
def test_deterministic_init_and_state_dict_round_trip(name: str) -> None:
    a, b, c = make(name, RICH, seed=0), make(name, RICH, seed=0), make(name, RICH, seed=5)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    open_gates(a)
    x = feats(RICH, 2)
    assert not torch.equal(a(x), c(x))
    c.load_state_dict(a.state_dict())
    assert torch.equal(a(x), c(x))


# --- pool ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("g,p", list(itertools.product([1, 4, 5, 16], [1, 2, 3, 4, 32])))
def test_pool_grid_size(g: int, p: int) -> None:
    layout = TokenLayout(groups=2, prefix=1, grid=g, views=2)
    model = make("pool", layout, pool=p)
    g2 = max(1, round(g / p))
    assert pooled_grid(g, p) == g2
    assert model.output_tokens(layout) == 2 * 2 * (1 + g2 * g2)
    assert model(feats(layout, 1)).shape == (1, 2 * 2 * (1 + g2 * g2), OUT)


def test_pool_below_one_raises() -> None:
    with pytest.raises(ValueError, match="model.projector.pool"):
        make("pool", RICH, pool=0)


@pytest.mark.parametrize("g,p", [(5, 2), (4, 2), (6, 4), (5, 1)])
def test_pool_matches_adaptive_avg_pool2d(g: int, p: int) -> None:
    b, v, t, pre = 2, 2, 3, 1
    layout = TokenLayout(groups=t, prefix=pre, grid=g, views=v)
    model = make("pool", layout, out_dim=IN, pool=p)
    model.mlp = nn.Identity()
    grid = torch.randn(b, v, t, g, g, IN)  # [..., row, col, D]
    cls = torch.randn(b, v, t, pre, IN)
    x = torch.zeros(b, layout.num_tokens, IN)
    for vi, ti, r, c in itertools.product(range(v), range(t), range(g), range(g)):
        base = (vi * t + ti) * layout.per_group
        x[:, base : base + pre] = cls[:, vi, ti]
        x[:, base + pre + r * g + c] = grid[:, vi, ti, r, c]
    g2 = pooled_grid(g, p)
    ref = F.adaptive_avg_pool2d(grid.permute(0, 1, 2, 5, 3, 4).reshape(-1, IN, g, g), g2)
    ref = ref.reshape(b, v, t, IN, g2 * g2).transpose(-1, -2)  # row-major pooled grid
    expected = torch.cat([cls, ref], dim=3).reshape(b, -1, IN)
    torch.testing.assert_close(model(x), expected)


def test_pool_constant_grid_stays_constant() -> None:
    layout = TokenLayout(groups=2, prefix=0, grid=5, views=1)
    model = make("pool", layout, out_dim=IN, pool=2)
    model.mlp = nn.Identity()
    y = model(torch.full((3, layout.num_tokens, IN), 2.5))
    torch.testing.assert_close(y, torch.full((3, 2 * 4, IN), 2.5))


# --- resampler ------------------------------------------------------------------------------------

def test_resampler_count_independent_of_grid() -> None:
    counts = set()
    for g in (0, 2, 4, 7):
        layout = TokenLayout(groups=3, prefix=1, grid=g, views=2)
        model = make("resampler", layout)
        assert model(feats(layout, 2)).shape == (2, 2 * 3 * 3, OUT)
        counts.add(model.output_tokens(layout))
    assert counts == {2 * 3 * 3}


def test_resampler_needs_tokens_and_valid_heads() -> None:
    with pytest.raises(ValueError, match="resampler"):
        make("resampler", TokenLayout(groups=2, prefix=0, grid=0))
    with pytest.raises(ValueError, match="model.projector.num_queries"):
        torch.manual_seed(0)
        build_projector(ProjectorConfig(name="resampler", num_queries=0), IN, OUT, RICH)
    assert make("resampler", RICH, in_dim=7)(feats(RICH, 1, d=7)).shape == (1, 18, OUT)  # width padded to 8


# --- prototype ------------------------------------------------------------------------------------

def test_prototype_is_set_like_and_batch_independent() -> None:
    model = make("prototype", RICH)
    x = feats(RICH, 3)
    y = model(x)
    assert y.shape == (3, 5, OUT)
    perm = torch.randperm(RICH.num_tokens, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(model(x[:, perm]), y)
    torch.testing.assert_close(model(x[1:2]), y[1:2])
    x2 = x.clone()
    x2[0] = 100 * torch.randn_like(x2[0])
    torch.testing.assert_close(model(x2)[1:], y[1:])


def test_prototype_of_identical_tokens_is_that_token() -> None:
    model = make("prototype", RICH, out_dim=IN)
    model.mlp = nn.Identity()
    tok = torch.randn(IN)
    torch.testing.assert_close(model(tok.expand(2, RICH.num_tokens, IN)), tok.expand(2, 5, IN))


# --- view_fusion ----------------------------------------------------------------------------------

@pytest.mark.parametrize("views", [1, 2, 3])
def test_view_fusion_at_init_is_mlp_of_view_mean(views: int) -> None:
    layout = TokenLayout(groups=2, prefix=1, grid=2, views=views)
    model = make("view_fusion", layout, layers=2)
    x = feats(layout, 3)
    expected = model.mlp(x.reshape(3, views, layout.per_view, IN).mean(1))
    torch.testing.assert_close(model(x), expected)
    open_gates(model)
    assert not torch.allclose(model(x), expected)


def test_view_fusion_view_order_only_matters_through_view_embeddings() -> None:
    layout = TokenLayout(groups=2, prefix=1, grid=2, views=3)
    model = make("view_fusion", layout)
    open_gates(model)
    with torch.no_grad():
        model.view_embed.normal_()
    x = feats(layout, 2)
    swapped = x.reshape(2, 3, layout.per_view, IN)[:, [2, 0, 1]].reshape_as(x)
    assert not torch.allclose(model(x), model(swapped), atol=1e-4)
    with torch.no_grad():
        model.view_embed.zero_()
    torch.testing.assert_close(model(x), model(swapped))


def test_view_fusion_heads_must_divide_width() -> None:
    with pytest.raises(ValueError, match="model.projector.heads"):
        make("view_fusion", RICH, in_dim=7)


def test_pool_after_mlp_projects_every_token_then_pools() -> None:
    """VideoGPT+'s order (model.projector.pool_after_mlp): mlp2x_gelu per token, then the grid's average."""
    from skillgpt.models.layout import TokenLayout
    from skillgpt.models.projectors.pool import PoolProjector

    torch.manual_seed(0)
    layout = TokenLayout(groups=3, prefix=0, grid=4)
    projector = PoolProjector(8, 6, layout, pool=2, mlp_first=True)
    x = torch.randn(2, layout.num_tokens, 8)
    y = projector.mlp(x).reshape(2 * 3, 4, 4, 6).permute(0, 3, 1, 2)
    expected = torch.nn.functional.avg_pool2d(y, 2).flatten(2).transpose(1, 2).reshape(2, 3 * 4, 6)
    torch.testing.assert_close(projector(x), expected)
    first = PoolProjector(8, 6, layout, pool=2)
    first.load_state_dict(projector.state_dict())
    assert (first(x) - expected).abs().max() > 1e-3  # the order matters (GELU between the linears)
