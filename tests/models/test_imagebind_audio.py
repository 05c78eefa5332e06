"""ImageBind audio wrapper: golden outputs through the wrapper, shapes vs layout, frozen, shared model."""
from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from skillgpt.config.schema import AudioConfig, EncoderConfig
from skillgpt.data.audio import load_audio
from skillgpt.models.encoders.imagebind_audio import ImageBindAudioEncoder
from skillgpt.models.encoders.imagebind_encoder import ImageBindVideoEncoder

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "imagebind"
WEIGHTS = FIX / "imagebind_small_weights.safetensors"
ATOL = 1e-5
SMALL = dict(vision_width=64, vision_layers=2, vision_heads=4, audio_width=48, audio_layers=2, audio_heads=4,
             out_dim=32)
PER_CLIP = 1 + 12 * 19  # class token + (128 - 16) / 10 + 1 mel rows x (204 - 16) / 10 + 1 time columns


def _cfg(**over) -> EncoderConfig:
    return EncoderConfig(**{**SMALL, "image_size": 224, "checkpoint": str(WEIGHTS), **over})


@pytest.fixture(scope="module")
def video_encoder() -> ImageBindVideoEncoder:
    """The small checkpoint loaded through the video wrapper with its audio branch."""
    return ImageBindVideoEncoder(_cfg(), with_audio=True)


@pytest.fixture(scope="module")
def audio() -> torch.Tensor:
    return load_file(str(FIX / "imagebind_small_inputs.safetensors"))["audio"]  # [2, 2, 1, 128, 204]


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_file(str(FIX / "imagebind_small_outputs.safetensors"))


def _wrap(video_encoder: ImageBindVideoEncoder, **over) -> ImageBindAudioEncoder:
    logit_scale = over.pop("logit_scale", False)
    return ImageBindAudioEncoder(video_encoder.model, _cfg(**over), logit_scale=logit_scale)


def test_checkpoint_loads_audio_branch(video_encoder: ImageBindVideoEncoder) -> None:
    ref = load_file(str(WEIGHTS))
    state = video_encoder.model.state_dict()
    audio_keys = [k for k in ref if ".audio." in k]
    assert audio_keys and sorted(state) == sorted(ref)
    for k in audio_keys:
        assert torch.equal(state[k], ref[k]), k


@pytest.mark.parametrize("keep_cls", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_clip_tokens_match_golden(video_encoder, audio, golden, keep_cls: bool, normalize: bool) -> None:
    enc = _wrap(video_encoder, output="clip_tokens", keep_cls=keep_cls, normalize_tokens=normalize)
    want = golden["audio_trunk_tokens"]  # [4, 229, 48]
    want = want if keep_cls else want[:, 1:]
    if normalize:
        with torch.no_grad():
            want = video_encoder.model.modality_heads["audio"][0](want)
    got = enc(audio)
    torch.testing.assert_close(got, want.reshape(2, 2 * want.shape[1], 48), atol=ATOL, rtol=0)
    assert got.shape[1] == enc.layout(2).num_tokens == 2 * (PER_CLIP - (not keep_cls))
    assert got.shape[2] == enc.out_dim == 48


def test_embeddings_match_golden(video_encoder, audio, golden) -> None:
    per_clip = F.normalize(golden["audio_head"], dim=-1).reshape(2, 2, 32)
    clips = _wrap(video_encoder, output="clip_embeddings")
    torch.testing.assert_close(clips(audio), per_clip, atol=ATOL, rtol=0)
    pooled = _wrap(video_encoder, output="pooled")
    torch.testing.assert_close(pooled(audio), per_clip.mean(1, keepdim=True), atol=ATOL, rtol=0)
    # with the checkpoint's logit scale, pooled is ImageBind's own audio embedding
    scaled = _wrap(video_encoder, output="pooled", logit_scale=True)
    torch.testing.assert_close(scaled(audio)[:, 0], golden["audio_embedding"], atol=ATOL, rtol=0)
    assert clips.out_dim == pooled.out_dim == 32


@pytest.mark.parametrize("output, per_clip, dim", [("pooled", None, 32), ("clip_embeddings", 1, 32),
                                                    ("clip_tokens", PER_CLIP, 48)])
def test_shapes_match_layout(video_encoder, output: str, per_clip, dim: int) -> None:
    enc = _wrap(video_encoder, output=output)
    x = torch.randn(2, 3, 1, 128, 204, generator=torch.Generator().manual_seed(0))
    out = enc(x)
    layout = enc.layout(3)
    assert tuple(out.shape) == (2, layout.num_tokens, dim) == (2, 1 if per_clip is None else 3 * per_clip, dim)
    assert layout.grid == 0 and layout.groups == (1 if output == "pooled" else 3)
    assert enc.tokens_per_audio(3) == layout.num_tokens
    assert enc(x[:, 0]).shape[1] == enc.layout(1).num_tokens  # [B, 1, mel, T] is one clip


def test_frozen_and_shares_the_video_model(video_encoder) -> None:
    enc = _wrap(video_encoder, output="clip_embeddings")
    assert enc.model is video_encoder.model
    assert all(not p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not enc(torch.randn(1, 2, 1, 128, 204)).requires_grad
    assert enc.weight_files() == [str(WEIGHTS)]
    assert enc.dtype == torch.float32 and enc.device.type == "cpu"
    shared = {id(p) for p in video_encoder.parameters()}
    assert {id(p) for p in enc.parameters()} <= shared


def test_rejects_bad_model_and_output(video_encoder) -> None:
    vision_only = ImageBindVideoEncoder(_cfg(checkpoint=None, image_size=56))
    with pytest.raises(ValueError, match="with_audio"):
        ImageBindAudioEncoder(vision_only.model, _cfg())
    with pytest.raises(ValueError, match="output"):
        _wrap(video_encoder, output="tokens")
    with pytest.raises(ValueError, match="expected audio"):
        _wrap(video_encoder)(torch.randn(128, 204))


def test_wav_file_to_tokens(tmp_path: Path, video_encoder) -> None:
    """load_audio's clips feed the encoder directly: [S, 1, mel, T] -> batch of one."""
    sr = 22050
    x = 0.5 * np.sin(2 * np.pi * 330 * np.arange(sr * 4) / sr)
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(np.round(x * 32767).astype("<i2").tobytes())
    clips = load_audio(path, AudioConfig())
    enc = _wrap(video_encoder, output="clip_tokens")
    out = enc(clips.unsqueeze(0))
    assert tuple(out.shape) == (1, enc.layout(AudioConfig().num_clips).num_tokens, 48)
    assert torch.isfinite(out).all()
    assert torch.equal(out, enc(clips.unsqueeze(0)))


def test_enabling_audio_keeps_the_seeded_vision_weights() -> None:
    """Seeded init draws modality by modality: audio on/off must not change a seed's vision encoder."""
    cfg = EncoderConfig(image_size=28, patch_size=14, vision_width=16, vision_layers=2, vision_heads=2,
                        audio_width=16, audio_layers=1, audio_heads=2, out_dim=8, init_seed=3)
    plain = ImageBindVideoEncoder(cfg).model.state_dict()
    with_audio = ImageBindVideoEncoder(cfg, with_audio=True).model.state_dict()
    assert plain.keys() < with_audio.keys()
    for name, tensor in plain.items():
        assert torch.equal(tensor, with_audio[name]), name
