"""`data.video.num_crops: 3` end to end: the encoders fold crops as ImageBind does (pooled and
clip_embeddings average them, token outputs keep every crop), placeholder counts follow, and a tiny
model trains and rates with three crops."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from skillgpt.config.schema import EncoderConfig
from skillgpt.models.build import build_model
from skillgpt.models.encoders.imagebind_encoder import ImageBindVideoEncoder
from skillgpt.models.skill_model import pick_frames

REPO = Path(__file__).resolve().parents[2]
CLIPS, CROPS = 2, 3


def _encoder(output: str, pool: int = 1) -> ImageBindVideoEncoder:
    cfg = EncoderConfig(image_size=32, patch_size=8, vision_width=32, vision_layers=1, vision_heads=2, out_dim=16,
                        audio_width=32, audio_layers=1, audio_heads=2, output=output, keep_cls=True, pool=pool)
    return ImageBindVideoEncoder(cfg)


@pytest.fixture(scope="module")
def video() -> torch.Tensor:
    """[B=2, clips x crops = 6, C, T, H, W], clip-major as load_video returns it; every row different."""
    return torch.randn(2, CLIPS * CROPS, 3, 2, 32, 32, generator=torch.Generator().manual_seed(0))


def test_pooled_and_clip_embeddings_average_the_crops(video) -> None:
    per_row = _encoder("clip_embeddings")(video)  # crops=1: one embedding per row (crop)
    per_clip = _encoder("clip_embeddings")(video, crops=CROPS)
    pooled = _encoder("pooled")(video, crops=CROPS)
    assert per_clip.shape == (2, CLIPS, 16) and pooled.shape == (2, 1, 16)
    torch.testing.assert_close(per_clip, per_row.reshape(2, CLIPS, CROPS, 16).mean(dim=2), rtol=0, atol=1e-6)
    torch.testing.assert_close(pooled, per_row.mean(dim=1, keepdim=True), rtol=0, atol=0)  # ImageBind: all rows
    torch.testing.assert_close(pooled, per_clip.mean(dim=1, keepdim=True), rtol=0, atol=1e-6)
    assert _encoder("clip_embeddings").layout(CLIPS, 2, CROPS).num_tokens == CLIPS
    assert _encoder("pooled").layout(CLIPS, 2, CROPS).num_tokens == 1


@pytest.mark.parametrize("pool", [1, 4])
def test_clip_tokens_keep_every_crop_clip_major(video, pool) -> None:
    enc = _encoder("clip_tokens", pool)
    out = enc(video, crops=CROPS)
    assert out.shape[1] == enc.layout(CLIPS, 2, CROPS).num_tokens == CLIPS * CROPS * (1 + (4 // pool) ** 2)
    per_group = enc.layout(1).per_group
    for row in range(CLIPS * CROPS):  # group r = clip r // 3, crop r % 3: that row encoded alone
        alone = enc(video[:, row:row + 1])
        torch.testing.assert_close(out[:, row * per_group:(row + 1) * per_group], alone, rtol=0, atol=1e-5)


def test_rows_not_a_multiple_of_the_crops_are_refused(video) -> None:
    with pytest.raises(ValueError, match="not num_clips x crops for crops=4"):
        _encoder("pooled")(video, crops=4)


def test_context_frames_are_picked_in_every_crop(video) -> None:
    picked = pick_frames(video, 3, crops=CROPS)  # [B, 3 frames x 3 crops, C, 1, H, W], frame-major
    assert picked.shape == (2, 3 * CROPS, 3, 1, 32, 32)
    for crop in range(CROPS):
        alone = pick_frames(video[:, crop::CROPS], 3)
        torch.testing.assert_close(picked[:, crop::CROPS], alone, rtol=0, atol=0)
    torch.testing.assert_close(pick_frames(video, 3, crops=1), pick_frames(video, 3), rtol=0, atol=0)


@pytest.fixture(scope="module")
def siglip(tmp_path_factory) -> Path:
    """A tiny SigLIP vision folder (weights + pixel statistics), as users would have it."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    folder = tmp_path_factory.mktemp("siglip")
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text('{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}')
    return folder


MODES = {  # the factor the crops multiply the <video> tokens by
    "clip_tokens+pool": (3, ["model.encoder.pool=1", "model.projector.name=pool", "model.projector.pool=2"]),
    "clip_embeddings": (1, ["model.encoder.output=clip_embeddings"]),
    "pooled+linear": (1, ["model.encoder.output=pooled", "model.projector.name=linear"]),
    "siglip_video": (3, ["model.encoder.name=hf_image", "model.encoder.path={siglip}"]),
    "pooled+siglip_context": (3, ["model.encoder.output=pooled", "model.context.enabled=true",
                                  "model.context.encoder.path={siglip}", "model.context.frames=2",
                                  "model.context.encoder.pool=2"]),
}


@pytest.mark.parametrize("mode", sorted(MODES))
def test_three_crops_train_a_step_with_counts_matching_the_pixels(mode, tiny_workspace, first_batch, siglip) -> None:
    factor, overrides = MODES[mode]
    overrides = [o.format(siglip=siglip) for o in overrides]
    cfg = tiny_workspace.config(2, f"crops-{mode}", "train.init_from=null", "data.video.num_crops=3",
                                "data.video.num_clips=2", "data.video.resolution=32",
                                "model.encoder.image_size=32", "model.encoder.patch_size=8", *overrides)
    torch.manual_seed(0)
    model, tok, ds, batch = first_batch(cfg, 2)
    assert batch["media"]["video"].shape[1] == 2 * 3  # clips x crops rows reach the model
    one_crop, _ = build_model(tiny_workspace.config(2, f"crops-{mode}", "train.init_from=null",
                                                    "data.video.num_clips=2", "data.video.resolution=32",
                                                    "model.encoder.image_size=32", "model.encoder.patch_size=8",
                                                    *overrides), on_meta=True)
    tokens, single = model.placeholder_tokens(), one_crop.placeholder_tokens()
    pooled_video = 1 if "context" in mode else 0  # the pooled ImageBind token is not multiplied
    assert tokens["<video>"] - pooled_video == factor * (single["<video>"] - pooled_video)
    assert tokens["<image>"] == single["<image>"]  # an image is one centre crop
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    loss = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["media"])
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())


def test_three_crops_train_through_the_cli_and_rate(tiny_workspace) -> None:
    """`skillgpt train` with num_crops: 3 (2 steps), then the saved checkpoint rates a clip."""
    from skillgpt.cli import main
    from skillgpt.inference.assistant import SkillAssistant

    args = ["train", str(REPO / "config" / "stage_2.yaml"), *tiny_workspace.overrides(2, "crops-cli"),
            "train.init_from=null", "train.max_steps=1", "data.val=null", "data.test=null", "data.video.num_crops=3",
            "data.video.num_clips=2", "train.save_every=0"]
    assert main(args) == 0
    assistant = SkillAssistant(tiny_workspace.root / "crops-cli" / "stage_2", device="cpu")
    assert assistant.cfg.data.video.num_crops == 3
    clip = sorted((tiny_workspace.data / "videos" / "test").glob("*.mp4"))[0]
    media = assistant.load_video(clip)
    assert media[0][1].shape[0] == assistant.cfg.data.video.num_clips * 3
    probs = assistant.rate(media)
    assert math.isclose(sum(probs.values()), 1.0, rel_tol=1e-4) and len(probs) == 4
