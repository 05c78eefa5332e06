"""InternVideo2 (VideoGPT+'s video tower): tokens, preprocessing and position-table resize equal to the original
code's on its own checkpoint layout (tests/fixtures/internvideo2: made by VideoGPT+'s InternVideo2 files)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skillgpt.config.schema import EncoderConfig, VideoConfig
from skillgpt.data.hf_preprocessing import preprocess_frames
from skillgpt.data.video import _decode, _open
from skillgpt.models.encoders import build_encoder
from skillgpt.pixel_rules import processor_rules

FIXTURES = Path(__file__).parents[1] / "fixtures"
HERE = FIXTURES / "internvideo2"
CHECKPOINT = HERE / "internvideo2_tiny.pt"
META = json.loads((HERE / "internvideo2_tiny.json").read_text())
MEAN = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float64).view(1, 1, 3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float64).view(1, 1, 3, 1, 1)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(HERE / "internvideo2_tiny_outputs.safetensors"))


def _encoder(frames: int = 4, **changes):
    cfg = EncoderConfig(**{"name": "internvideo2", "checkpoint": str(CHECKPOINT), "vision_heads": 4,
                           "keep_cls": False, **changes})
    return build_encoder(cfg, VideoConfig(frames_per_clip=frames, processor="internvideo2"))


def _pixels(golden: dict, key: str) -> torch.Tensor:
    """The original processor's pixels [2 chunks, 4 frames, 3, 224, 224] (stored as its resized uint8 frames)."""
    return ((golden[f"{key}.resized"].double() / 255.0 - MEAN) / STD).float()


@pytest.fixture(scope="module")
def encoder():
    return _encoder()


@pytest.mark.parametrize("case", META["cases"], ids=lambda c: c["clip"])
def test_tokens_equal_the_original(encoder, golden, case) -> None:
    key = Path(case["clip"]).stem
    clips = _pixels(golden, key).transpose(1, 2)  # [N, 3, T, H, W]
    ours = encoder.encode_clips(clips)
    assert ours.shape == golden[f"{key}.video"].shape == (2, 1 + 4 * 16 * 16, 48)
    assert (ours - golden[f"{key}.video"]).abs().max().item() <= 1e-5
    image = encoder.encode_clips(clips[:1, :, :1])  # one frame: the image position table
    assert (image - golden[f"{key}.image"]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("case", META["cases"], ids=lambda c: c["clip"])
def test_preprocessing_from_the_committed_clip(encoder, golden, case) -> None:
    """decode (same frames) -> data.video.processor internvideo2 (cv2 resize, ImageNet) -> tokens without class."""
    path = FIXTURES / "preprocessing" / case["clip"]
    frames = _decode(_open(path, 1), path, case["frame_indices"], 1)
    assert [hashlib.sha256(f.numpy().tobytes()).hexdigest() for f in frames] == case["frames_sha256"]
    pixels = preprocess_frames(frames.permute(0, 3, 1, 2), processor_rules("internvideo2"))[0]  # [8, 3, 224, 224]
    expected = _pixels(golden, Path(case["clip"]).stem)
    assert (pixels.reshape(expected.shape) - expected).abs().max().item() <= 1e-6
    video = pixels.reshape(1, 2, 4, 3, 224, 224).transpose(2, 3)  # [B, S, C, T, H, W]
    tokens = encoder(video)[0]
    assert tokens.shape == (2 * 4 * 256, 48)  # the class token dropped, as VideoGPT+'s encode_videos
    assert (tokens - golden[f"{Path(case['clip']).stem}.video"][:, 1:].reshape(-1, 48)).abs().max().item() <= 1e-5


def test_a_torchvision_resize_would_differ(golden) -> None:
    """The test can fail: torchvision's antialiased bilinear resize is not cv2's."""
    case = META["cases"][0]
    path = FIXTURES / "preprocessing" / case["clip"]
    frames = _decode(_open(path, 1), path, case["frame_indices"], 1).permute(0, 3, 1, 2)
    import dataclasses

    other = dataclasses.replace(processor_rules("internvideo2"), backend="torchvision")
    pixels = preprocess_frames(frames, other)[0]
    assert (pixels.reshape(2, 4, 3, 224, 224) - _pixels(golden, Path(case["clip"]).stem)).abs().max().item() > 0.05


def test_position_table_resized_in_time_as_the_original(golden) -> None:
    eight = _encoder(frames=8)
    assert (eight.pos_embed - golden["pos_embed_8_frames"]).abs().max().item() <= 1e-6


def test_pool_layout_and_meta_build() -> None:
    encoder = _encoder(pool=2)
    assert encoder.layout(2, 4).num_tokens == 2 * 4 * 64 and encoder.weight_files() == [str(CHECKPOINT)]
    assert encoder(torch.zeros(1, 2, 3, 4, 224, 224)).shape == (1, 2 * 4 * 64, 48)
    assert len(encoder.blocks) == 2  # the file has 3 blocks; VideoGPT+ reads the output of block depth-2
    random = build_encoder(EncoderConfig(name="internvideo2", keep_cls=False, vision_width=1408, vision_layers=39,
                                         vision_heads=16), VideoConfig(frames_per_clip=4), on_meta=True)
    # a block: qkv 1408 x 4224, proj 1408^2 + 1408, fc1/fc2 1408 x 6144 (+ biases), six 1408 vectors; stem Conv3d
    # 3*14*14 x 1408 + 1408, class token, video (1 + 4*256) and image (1 + 256) position tables
    block = 1408 * 4224 + 1408 * 1408 + 1408 + 2 * 1408 * 6144 + 6144 + 1408 + 6 * 1408
    assert sum(p.numel() for p in random.parameters()) == 39 * block + 829_312 + 1408 + (1025 + 257) * 1408


@pytest.mark.parametrize("changes,message", [
    ({"keep_cls": True}, "keep_cls"),
    ({"checkpoint": str(FIXTURES / "internvideo2" / "internvideo2_tiny.json")}, "internvideo2_tiny.json"),
    ({"checkpoint": "/no/such/internvideo2.pt"}, "not found"),
    ({"output": "pooled"}, "clip_tokens"),
])
def test_bad_settings_name_the_field(changes, message) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        _encoder(**changes)


@pytest.mark.parametrize("name", ["linear", "mlp2x_gelu", "pool", "resampler", "prototype"])
def test_every_projector_reads_its_tokens(name) -> None:
    """The per-frame layout (prefix 0, a g x g grid per frame) fits every single-view projector."""
    from skillgpt.config.schema import ProjectorConfig
    from skillgpt.models.projectors import build_projector

    encoder = build_encoder(EncoderConfig(name="internvideo2", keep_cls=False, vision_width=16, vision_layers=1,
                                          vision_heads=2, image_size=28, pool=1),
                            VideoConfig(frames_per_clip=2, processor="internvideo2"))
    layout = encoder.layout(3, 2)
    tokens = encoder(torch.randn(2, 3, 3, 2, 28, 28))
    assert tokens.shape == (2, layout.num_tokens, 16) and (layout.groups, layout.grid) == (6, 2)
    projector = build_projector(ProjectorConfig(name=name, pool=2, num_queries=2, num_prototypes=3, heads=2),
                                16, 8, layout)
    out = projector(tokens)
    assert out.shape[0] == 2 and out.shape[-1] == 8 and out.shape[1] == projector.output_tokens(layout)
