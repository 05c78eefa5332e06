"""ImageBind re-implementation: golden outputs, checkpoint names, loading, and the frozen wrapper."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from skillgpt.config.schema import EncoderConfig
from skillgpt.models.encoders.imagebind import ImageBindModel
from skillgpt.models.encoders.imagebind_weights import load_imagebind_state, load_state_strict
from skillgpt.models.encoders.imagebind_encoder import ImageBindVideoEncoder

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "imagebind"
WEIGHTS = FIX / "imagebind_small_weights.safetensors"
ATOL = 1e-5

SMALL = dict(
    vision_width=64, vision_layers=2, vision_heads=4,
    audio_width=48, audio_layers=2, audio_heads=4, out_dim=32,
)
HUGE = dict(
    vision_width=1280, vision_layers=32, vision_heads=16,
    audio_width=768, audio_layers=12, audio_heads=12, out_dim=1024,
)


def _small_cfg_kwargs() -> dict:
    cfg = json.loads((FIX / "imagebind_small_config.json").read_text())
    return dict(
        vision_width=cfg["vision_embed_dim"], vision_layers=cfg["vision_num_blocks"],
        vision_heads=cfg["vision_num_heads"], audio_width=cfg["audio_embed_dim"],
        audio_layers=cfg["audio_num_blocks"], audio_heads=cfg["audio_num_heads"],
        out_dim=cfg["out_embed_dim"], frames=cfg["video_frames"], patch_size=cfg["kernel_size"][1],
        audio_kernel_size=cfg["audio_kernel_size"], audio_stride=cfg["audio_stride"],
        audio_mel_bins=cfg["audio_num_mel_bins"], audio_target_len=cfg["audio_target_len"],
    )


@pytest.fixture(scope="module")
def small_model() -> ImageBindModel:
    model = ImageBindModel(**_small_cfg_kwargs(), with_audio=True).eval()
    load_state_strict(model, load_imagebind_state(WEIGHTS), source=str(WEIGHTS))
    return model


@pytest.fixture(scope="module")
def inputs() -> dict:
    return load_file(str(FIX / "imagebind_small_inputs.safetensors"))


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_file(str(FIX / "imagebind_small_outputs.safetensors"))


@pytest.fixture(scope="module")
def outputs(small_model: ImageBindModel, inputs: dict) -> dict:
    m = small_model
    with torch.no_grad():
        vt = m.vision_trunk_tokens(inputs["video"].flatten(0, 1))
        at = m.audio_trunk_tokens(inputs["audio"].flatten(0, 1))
        return {
            "video_trunk_tokens": vt,
            "video_head": m.vision_head(vt),
            "video_embedding": m.embed_video(inputs["video"]),
            "image_trunk_tokens": m.vision_trunk_tokens(inputs["image"]),
            "image_embedding": m.embed_image(inputs["image"]),
            "audio_trunk_tokens": at,
            "audio_head": m.audio_head(at),
            "audio_embedding": m.embed_audio(inputs["audio"]),
        }


# ----------------------------------------------------------------------------- golden outputs
def test_small_config_matches_defaults() -> None:
    kw = _small_cfg_kwargs()
    assert kw["patch_size"] == 14 and kw["frames"] == 2
    assert {k: kw[k] for k in SMALL} == SMALL


@pytest.mark.parametrize(
    "name",
    [
        "video_trunk_tokens", "video_head", "video_embedding", "image_trunk_tokens",
        "image_embedding", "audio_trunk_tokens", "audio_head", "audio_embedding",
    ],
)
def test_golden_output(name: str, outputs: dict, golden: dict) -> None:
    got, want = outputs[name], golden[name]
    assert got.dtype == torch.float32
    assert tuple(got.shape) == tuple(want.shape), name
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


def test_golden_outputs_are_sensitive(small_model: ImageBindModel, inputs: dict, golden: dict) -> None:
    """A perturbed weight must break the match (guards against vacuous comparisons)."""
    state = {k: v.clone() for k, v in small_model.state_dict().items()}
    state["modality_trunks.audio.blocks.1.attn.bias_k"] += 3.0
    state["modality_trunks.vision.blocks.1.attn.in_proj_weight"][0] += 0.5
    other = ImageBindModel(**_small_cfg_kwargs()).eval()
    other.load_state_dict(state)
    with torch.no_grad():
        v = other.vision_trunk_tokens(inputs["video"].flatten(0, 1))
        a = other.audio_trunk_tokens(inputs["audio"].flatten(0, 1))
    assert (v - golden["video_trunk_tokens"]).abs().max() > 10 * ATOL
    assert (a - golden["audio_trunk_tokens"]).abs().max() > 10 * ATOL


def test_image_repeats_to_two_frames(small_model: ImageBindModel, inputs: dict) -> None:
    img = inputs["image"]
    with torch.no_grad():
        a = small_model.vision_trunk_tokens(img)
        b = small_model.vision_trunk_tokens(img.unsqueeze(2).repeat(1, 1, 2, 1, 1))
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


# ----------------------------------------------------------------------------- huge names/shapes
def test_huge_state_dict_matches_official_names_and_shapes() -> None:
    want = {k: tuple(v) for k, v in json.loads((FIX / "imagebind_huge_vision_audio_shapes.json").read_text()).items()}
    with torch.device("meta"):
        model = ImageBindModel(**HUGE, with_audio=True)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(want) - set(got)) == []  # nothing missing
    assert sorted(set(got) - set(want)) == []  # nothing extra
    assert got == want
    assert sum(torch.Size(s).numel() for s in got.values()) == 719_065_089
    assert model.modality_preprocessors["vision"].cls_token.is_meta

    with torch.device("meta"):
        vision_only = ImageBindModel(**HUGE, with_audio=False)
    vis = {k: tuple(v.shape) for k, v in vision_only.state_dict().items()}
    assert vis == {k: s for k, s in want.items() if ".vision." in k}


# ----------------------------------------------------------------------------- checkpoint loading
def _with_other_modalities(state: dict) -> dict:
    extra = dict(state)
    extra["modality_preprocessors.text.token_embedding.weight"] = torch.randn(10, 8)
    extra["modality_trunks.text.blocks.0.attn.in_proj_weight"] = torch.randn(24, 8)
    extra["modality_heads.text.proj.0.weight"] = torch.randn(8)
    extra["modality_postprocessors.text.1.log_logit_scale"] = torch.tensor(2.0)
    extra["modality_trunks.depth.blocks.0.norm_1.weight"] = torch.randn(8)
    extra["modality_heads.thermal.2.weight"] = torch.randn(4, 8)
    extra["modality_preprocessors.imu.cls_token"] = torch.randn(1, 1, 8)
    return extra


def test_pth_with_extra_modalities_round_trips(tmp_path: Path, small_model: ImageBindModel) -> None:
    ref = load_file(str(WEIGHTS))
    path = tmp_path / "imagebind_tiny.pth"
    torch.save(_with_other_modalities(ref), path)
    state = load_imagebind_state(path)
    assert sorted(state) == sorted(ref)
    for k in ref:
        assert torch.equal(state[k], ref[k]), k
    model = ImageBindModel(**_small_cfg_kwargs())
    model.load_checkpoint(path)  # strict
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k

    vision = load_imagebind_state(path, modalities=("vision",))
    assert vision and all(".vision." in k for k in vision)
    vis_model = ImageBindModel(**_small_cfg_kwargs(), with_audio=False)
    vis_model.load_checkpoint(path)


def test_strict_load_error_names_keys_and_file(tmp_path: Path) -> None:
    ref = load_file(str(WEIGHTS))
    ref.pop("modality_heads.vision.2.weight")
    ref["modality_trunks.vision.blocks.9.norm_1.weight"] = torch.ones(64)
    path = tmp_path / "broken.safetensors"
    save_file(ref, str(path))
    model = ImageBindModel(**_small_cfg_kwargs())
    with pytest.raises(RuntimeError) as err:
        model.load_checkpoint(path)
    msg = str(err.value)
    assert "broken.safetensors" in msg
    assert "modality_heads.vision.2.weight" in msg
    assert "modality_trunks.vision.blocks.9.norm_1.weight" in msg
    with pytest.raises(FileNotFoundError):
        load_imagebind_state(tmp_path / "nope.pth")


# ----------------------------------------------------------------------------- wrapper
def _enc_cfg(**over) -> EncoderConfig:
    base = dict(SMALL, image_size=56, patch_size=14, frames=2, init_seed=0)
    base.update(over)
    return EncoderConfig(**base)


def _video(b: int = 2, s: int = 3, size: int = 56) -> torch.Tensor:
    return torch.randn(b, s, 3, 2, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "over, n_per_clip, dim",
    [
        (dict(output="pooled"), None, 32),
        (dict(output="clip_embeddings"), 1, 32),
        (dict(output="clip_tokens", pool=1, keep_cls=True), 1 + 16, 64),
        (dict(output="clip_tokens", pool=1, keep_cls=False), 16, 64),
        (dict(output="clip_tokens", pool=2, keep_cls=True), 1 + 4, 64),
        (dict(output="clip_tokens", pool=3, keep_cls=True, normalize_tokens=False), 1 + 1, 64),
        (dict(output="clip_tokens", pool=16, keep_cls=False), 1, 64),
    ],
)
def test_wrapper_shapes(over: dict, n_per_clip, dim: int) -> None:
    enc = ImageBindVideoEncoder(_enc_cfg(**over))
    out = enc(_video(2, 3))
    n = 1 if n_per_clip is None else 3 * n_per_clip
    assert tuple(out.shape) == (2, n, dim)
    assert enc.tokens_per_video(3) == n and enc.out_dim == dim
    assert torch.isfinite(out).all()


def test_wrapper_pool_on_224_grid() -> None:
    enc = ImageBindVideoEncoder(_enc_cfg(image_size=224, output="clip_tokens", pool=4, vision_layers=1))
    assert enc.tokens_per_video(5) == 5 * (1 + 16)
    out = enc(_video(1, 2, 224))
    assert tuple(out.shape) == (1, 2 * 17, 64)


def test_wrapper_frozen_and_deterministic() -> None:
    enc = ImageBindVideoEncoder(_enc_cfg(output="clip_embeddings"))
    assert not enc.training
    assert all(not p.requires_grad for p in enc.parameters())
    assert not hasattr(enc.model.modality_trunks, "audio") and "audio" not in enc.model.modality_trunks
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    out = enc(_video())
    assert not out.requires_grad
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2, 3))

    same = ImageBindVideoEncoder(_enc_cfg(output="clip_embeddings"))
    other = ImageBindVideoEncoder(_enc_cfg(output="clip_embeddings", init_seed=1))
    for (k, a), (_, b) in zip(enc.state_dict().items(), same.state_dict().items()):
        assert torch.equal(a, b), k
    w = "model.modality_trunks.vision.blocks.0.attn.in_proj_weight"
    assert not torch.equal(enc.state_dict()[w], other.state_dict()[w])
    assert 0.01 < float(enc.state_dict()[w].std()) < 0.03


def test_wrapper_modes_agree_with_model(tmp_path: Path, inputs: dict, golden: dict) -> None:
    """With the small checkpoint, the wrapper reproduces the reference video embedding."""
    cfg = _enc_cfg(image_size=224, checkpoint=str(WEIGHTS), output="pooled")
    pooled = ImageBindVideoEncoder(cfg)
    torch.testing.assert_close(pooled(inputs["video"])[:, 0], golden["video_embedding"], atol=ATOL, rtol=0)

    clips = ImageBindVideoEncoder(dataclasses.replace(cfg, output="clip_embeddings"))
    want = torch.nn.functional.normalize(golden["video_head"], dim=-1).unsqueeze(0)
    torch.testing.assert_close(clips(inputs["video"]), want, atol=ATOL, rtol=0)

    toks = ImageBindVideoEncoder(dataclasses.replace(cfg, output="clip_tokens", pool=1))
    ln = pooled.model.modality_heads["vision"][0]
    with torch.no_grad():
        want_t = ln(golden["video_trunk_tokens"]).reshape(1, 2 * 257, 64)
    torch.testing.assert_close(toks(inputs["video"]), want_t, atol=ATOL, rtol=0)


def test_wrapper_rejects_bad_config() -> None:
    with pytest.raises(ValueError):
        ImageBindVideoEncoder(_enc_cfg(output="tokens"))
    with pytest.raises(ValueError):
        ImageBindVideoEncoder(_enc_cfg(pool=0))
