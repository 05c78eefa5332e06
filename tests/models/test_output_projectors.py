"""Output projectors against NExT-GPT's original TextFcLayer (fixture: tests/fixtures/nextgpt/output_projector)."""
from __future__ import annotations

import lzma
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load

from skillgpt.models.output_projectors import (
    OutputProjectorConfig,
    apply_output_projectors,
    build_output_projector,
    infer_nextgpt_config,
    load_nextgpt_output_projectors,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nextgpt" / "output_projector"
FILES = {"linear": "linear.safetensors", "transformer": "transformer.safetensors.xz"}
PREFIX = "gen_text_hidden_fcs.0."


@cache
def _fixture(mode: str) -> dict[str, torch.Tensor]:
    path = FIXTURE / FILES[mode]
    data = path.read_bytes()
    return load(lzma.decompress(data) if path.suffix == ".xz" else data)


@pytest.fixture(scope="module", params=sorted(FILES))
def fixture(request: pytest.FixtureRequest) -> tuple[str, dict[str, torch.Tensor]]:
    return request.param, _fixture(request.param)


def test_fixture_metadata() -> None:
    with safe_open(str(FIXTURE / FILES["linear"]), "pt") as f:
        meta = f.metadata()
    assert meta["mode"] == "linear" and "AttributeError" in meta["original_forward_error"]


@torch.no_grad()
def test_matches_original(fixture: tuple[str, dict[str, torch.Tensor]]) -> None:
    mode, t = fixture
    weights = {k[len(PREFIX):]: v for k, v in t.items() if k.startswith(PREFIX)}
    cfg = OutputProjectorConfig(kind=mode, in_dim=32, out_dim=16, num_output_tokens=4)
    proj = build_output_projector(cfg).eval()
    proj.load_state_dict(weights, strict=True)
    out = proj(t["inputs.hidden"], t["inputs.input_embs"])
    ref = t["outputs.reference"]
    assert out.shape == ref.shape == (2, 4, 16)
    assert (out - ref).abs().max().item() <= 1e-5

    # the checkpoint loader reads the same config from the tensors and gives the same result
    loaded = load_nextgpt_output_projectors(t, modalities=["image"])
    assert list(loaded) == ["image"] and len(loaded["image"]) == 1
    inferred = infer_nextgpt_config(weights)
    assert inferred == (cfg if mode == "transformer" else OutputProjectorConfig(kind="linear", in_dim=32, out_dim=16))
    out2 = apply_output_projectors(loaded["image"].eval(), [t["inputs.hidden"]], t["inputs.input_embs"])
    assert (out2 - ref).abs().max().item() <= 1e-5


def test_shapes_and_nextgpt_defaults() -> None:
    proj = build_output_projector({"kind": "transformer", "in_dim": 24, "out_dim": 10, "num_output_tokens": 5,
                                   "hidden_dim": 16, "num_encoder_layers": 1, "num_decoder_layers": 1})
    h, e = torch.randn(3, 4, 24), torch.randn(3, 4, 24)
    assert proj(h, e).shape == (3, 5, 10)
    lin = build_output_projector(OutputProjectorConfig(kind="linear", in_dim=24, out_dim=10, num_output_tokens=2))
    assert lin(h, e).shape == (3, 2, 10)
    summed = apply_output_projectors([lin, lin], [h, h], e)
    assert torch.allclose(summed, 2 * lin(h, e))
    # NExT-GPT's hard-coded transformer: width 512, 4+4 layers, 4 heads, FFN 2048 (same parameter names)
    names = dict(build_output_projector(OutputProjectorConfig(in_dim=32, out_dim=16, num_output_tokens=4))
                 .state_dict())
    ref = _fixture("transformer")
    assert {PREFIX + k: tuple(v.shape) for k, v in names.items()} == \
        {k: tuple(v.shape) for k, v in ref.items() if k.startswith(PREFIX)}
    with pytest.raises(ValueError, match="unknown output projector kind"):
        build_output_projector({"kind": "qformer"})


def test_loader_modalities_and_bad_keys() -> None:
    lin = build_output_projector(OutputProjectorConfig(kind="linear", in_dim=8, out_dim=4))
    sd = {f"module.{attr}.0.{k}": v for attr in ("gen_text_hidden_fcs", "gen_text_hidden_fcs_video",
                                                 "gen_text_hidden_fcs_audio") for k, v in lin.state_dict().items()}
    sd["module.llama_proj.weight"] = torch.zeros(2, 2)  # other checkpoint keys are ignored
    got = load_nextgpt_output_projectors(sd, prefix="module.")
    assert list(got) == ["image", "video", "audio"]
    assert torch.equal(got["video"][0].model.weight, lin.model.weight)

    broken = dict(sd)
    broken["module.gen_text_hidden_fcs_audio.0.extra"] = torch.zeros(1)
    del broken["module.gen_text_hidden_fcs_audio.0.model.bias"]
    with pytest.raises(ValueError, match=r"missing \['module.gen_text_hidden_fcs_audio.0.model.bias'\], "
                                         r"unexpected \['module.gen_text_hidden_fcs_audio.0.extra'\]"):
        load_nextgpt_output_projectors(broken, prefix="module.")
    with pytest.raises(ValueError, match=r"missing \['gen_text_hidden_fcs_video.0.\*'\]"):
        load_nextgpt_output_projectors({"gen_text_hidden_fcs.0.model.weight": torch.zeros(4, 8),
                                        "gen_text_hidden_fcs.0.model.bias": torch.zeros(4)},
                                       modalities=["image", "video"])
    with pytest.raises(ValueError, match=r"unexpected \['gen_text_hidden_fcs.weight'\]"):
        load_nextgpt_output_projectors({"gen_text_hidden_fcs.weight": torch.zeros(1)})
    with pytest.raises(NotImplementedError, match="qformer"):
        load_nextgpt_output_projectors({"gen_text_hidden_fcs.0.Qformer.bert.x": torch.zeros(1),
                                        "gen_text_hidden_fcs.0.model.weight": torch.zeros(4, 8)})
