"""EVA-CLIP ViT-g (+ Q-Former) encoder: the features MiniGPT-4 / MiniGPT-v2's own encode_img gives before
llama_proj (tests/fixtures/minigpt4, minigpt_v2: made by the original code from these LAVIS-layout files)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skillgpt.config.schema import EncoderConfig, VideoConfig
from skillgpt.models.encoders import build_encoder

FIXTURES = Path(__file__).parents[1] / "fixtures"
VIT = FIXTURES / "minigpt4" / "eva_vit_g.pth"
BLIP2 = FIXTURES / "minigpt4" / "blip2_pretrained.pth"
SETTINGS = {  # the tiny sizes the fixtures were made with (README there)
    "minigpt4": dict(qformer=str(BLIP2), qformer_heads=4, image_size=28),
    "minigpt_v2": dict(merge_tokens=4, image_size=56),
}


def _cfg(kind: str, **changes) -> EncoderConfig:
    return EncoderConfig(**{"name": "eva_clip", "checkpoint": str(VIT), "vision_layers": 2, "vision_heads": 4,
                            **SETTINGS[kind], **changes})


def _features(kind: str, **changes) -> tuple[torch.Tensor, torch.Tensor]:
    golden = load_file(str(FIXTURES / kind / "golden.safetensors"))
    pixels = golden["pixel_values"]
    encoder = build_encoder(_cfg(kind, **changes), VideoConfig())
    return encoder(pixels.reshape(1, 1, 3, 1, *pixels.shape[-2:]))[0], golden["features"]


@pytest.mark.parametrize("kind", ["minigpt4", "minigpt_v2"])
def test_features_equal_originals(kind) -> None:
    ours, expected = _features(kind)
    assert ours.shape == expected.shape  # 4 queries x 32 / (56/14)^2 / 4 tokens x 4 * 32
    assert (ours - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("kind,change", [("minigpt4", {"vision_layers": 3}), ("minigpt_v2", {"image_size": 28, "merge_tokens": 1})])
def test_other_settings_differ(kind, change) -> None:
    """The test can fail: the unused third block of the file, or no position interpolation, change the features."""
    ours, expected = _features(kind, **change)
    assert ours.shape != expected.shape or (ours - expected).abs().max().item() > 1e-3


def test_layout_and_meta_build() -> None:
    encoder = build_encoder(_cfg("minigpt4"), VideoConfig(), on_meta=True)
    assert encoder.out_dim == 32 and encoder.tokens_per_video(2, 1) == 8
    assert encoder.layout(1, 2).grid == 0 and encoder.weight_files() == [str(VIT), str(BLIP2)]
    v2 = build_encoder(_cfg("minigpt_v2"), VideoConfig(), on_meta=True)
    assert (v2.out_dim, v2.tokens_per_video(1, 1)) == (128, 4)


def test_two_frames_are_two_groups() -> None:
    encoder = build_encoder(_cfg("minigpt_v2"), VideoConfig())
    video = torch.randn(1, 1, 3, 2, 56, 56)
    both = encoder(video)[0]
    assert both.shape == (8, 128)
    assert torch.allclose(both[4:], encoder(video[:, :, :, 1:])[0], atol=1e-6)


def test_bad_inputs_are_named(tmp_path) -> None:
    state = torch.load(VIT, weights_only=True)
    broken = tmp_path / "vit.pth"
    torch.save({**{k: v for k, v in state.items() if k != "blocks.1.attn.q_bias"}, "blocks.0.attn.gamma": torch.ones(1)}, broken)
    with pytest.raises(ValueError, match=r"unknown keys \['blocks.0.attn.gamma'\]"):
        build_encoder(_cfg("minigpt_v2", checkpoint=str(broken)), VideoConfig())
    del state["blocks.1.attn.q_bias"]
    torch.save(state, broken)
    with pytest.raises(ValueError, match=r"missing keys \['blocks.1.attn.q_bias'\]"):
        build_encoder(_cfg("minigpt_v2", checkpoint=str(broken)), VideoConfig())
    with pytest.raises(ValueError, match="vision_layers: 5, but .* has 3 blocks"):
        build_encoder(_cfg("minigpt_v2", vision_layers=5), VideoConfig())
    with pytest.raises(ValueError, match="merge_tokens: 4 with a Q-Former"):
        build_encoder(_cfg("minigpt4", merge_tokens=4), VideoConfig())
    with pytest.raises(ValueError, match="merge_tokens: 3 does not divide"):
        build_encoder(_cfg("minigpt_v2", merge_tokens=3), VideoConfig())
    with pytest.raises(ValueError, match="checkpoint is not set"):
        build_encoder(_cfg("minigpt_v2", checkpoint=None), VideoConfig())
