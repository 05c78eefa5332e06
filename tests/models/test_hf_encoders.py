"""Hugging Face encoders (hf_image: CLIP/SigLIP, hf_video: VideoMAE/TimeSformer) from tiny local folders."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipConfig,
    SiglipModel,
    TimesformerConfig,
    TimesformerModel,
    VideoMAEConfig,
    VideoMAEModel,
)

from skillgpt.config.schema import EncoderConfig, VideoConfig
from skillgpt.models.encoders import build_encoder

TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
MODEL_MEAN, MODEL_STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
DATA = VideoConfig(resolution=32)  # CLIP statistics: differ from the models' own


def _save(model: torch.nn.Module, folder: Path, stats: bool = True) -> Path:
    torch.manual_seed(0)
    model.save_pretrained(folder)
    if stats:
        (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": MODEL_MEAN, "image_std": MODEL_STD}))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_encoders")
    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(**TINY, image_size=32, patch_size=8))
    clip.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32, image_mean=MODEL_MEAN,
                       image_std=MODEL_STD).save_pretrained(root / "clip")
    siglip = SiglipModel(SiglipConfig(  # a full two-tower folder: the vision tower is taken from it
        text_config=dict(**TINY, vocab_size=64, max_position_embeddings=16),
        vision_config=dict(**TINY, image_size=32, patch_size=8),
    ))
    videomae = VideoMAEModel(VideoMAEConfig(**TINY, image_size=32, patch_size=8, num_frames=4, tubelet_size=2))
    timesformer = TimesformerModel(TimesformerConfig(**TINY, image_size=32, patch_size=8, num_frames=2))
    space_only = TimesformerModel(TimesformerConfig(
        **TINY, image_size=32, patch_size=8, num_frames=2, attention_type="space_only"))
    return {
        "clip": root / "clip",
        "siglip": _save(siglip, root / "siglip"),
        "videomae": _save(videomae, root / "videomae"),
        "timesformer": _save(timesformer, root / "timesformer"),
        "space_only": _save(space_only, root / "space_only"),
        "root": root,
    }


def _encoder(name: str, path: Path, video: VideoConfig = DATA, on_meta: bool = False, **kw):
    return build_encoder(EncoderConfig(name=name, path=str(path), **kw), video, on_meta=on_meta)


def _renorm(frames: torch.Tensor, video: VideoConfig = DATA, size: int = 32) -> torch.Tensor:
    """Reference: data normalisation -> raw pixels -> model normalisation, frames [N, C, H, W]."""
    view = (1, 3, 1, 1)
    raw = frames * torch.tensor(video.std).view(view) + torch.tensor(video.mean).view(view)
    x = (raw - torch.tensor(MODEL_MEAN).view(view)) / torch.tensor(MODEL_STD).view(view)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def _image_reference(model, video: torch.Tensor, layer: int, video_cfg: VideoConfig = DATA) -> torch.Tensor:
    """Direct HF call frame by frame: [B, S, C, T, H, W] -> [B, S, T, tokens, D]."""
    b, s, _, t = video.shape[:4]
    out = torch.stack([
        model(pixel_values=_renorm(video[i, j, :, k][None], video_cfg), output_hidden_states=True).hidden_states[layer][0]
        for i in range(b) for j in range(s) for k in range(t)
    ])
    return out.reshape(b, s, t, *out.shape[1:])


def test_clip_tokens_match_direct_call(folders):
    enc = _encoder("hf_image", folders["clip"])
    video = torch.randn(2, 3, 3, 2, 32, 32)  # B=2, S=3 clips, T=2 frames
    out = enc(video)
    layout = enc.layout(3, 2)
    assert (layout.groups, layout.prefix, layout.grid) == (6, 1, 4)
    assert out.shape == (2, layout.num_tokens, 32) and enc.out_dim == 32
    model = CLIPVisionModel.from_pretrained(folders["clip"]).eval()
    ref = _image_reference(model, video, -2)  # [B, S, T, 17, D]
    torch.testing.assert_close(out, ref.reshape(2, -1, 32), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out, _image_reference(model, video, -1).reshape(2, -1, 32), atol=1e-3)


def test_clip_resize_pool_and_no_cls(folders):
    data = VideoConfig(resolution=40, mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5])
    enc = _encoder("hf_image", folders["clip"], video=data, pool=2, keep_cls=False, select_layer=-1)
    layout = enc.layout(1, 2)
    assert (layout.groups, layout.prefix, layout.grid) == (2, 0, 2)
    video = torch.randn(1, 1, 3, 2, 40, 40)
    out = enc(video)
    assert out.shape == (1, layout.num_tokens, 32)
    model = CLIPVisionModel.from_pretrained(folders["clip"]).eval()
    ref = _image_reference(model, video, -1, data)[0, 0]  # [T, 17, D]
    grid = ref[:, 1:].transpose(1, 2).reshape(2, 32, 4, 4)
    expected = F.adaptive_avg_pool2d(grid, 2).flatten(2).transpose(1, 2).reshape(1, -1, 32)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_siglip_from_full_model_folder_has_no_cls(folders):
    enc = _encoder("hf_image", folders["siglip"], keep_cls=True)
    assert enc.layout(2, 1).prefix == 0 and enc.layout(2, 1).num_tokens == 2 * 16
    video = torch.randn(1, 2, 3, 1, 32, 32)
    out = enc(video)
    full = SiglipModel.from_pretrained(folders["siglip"]).eval()
    ref = _image_reference(full.vision_model, video, -2)
    torch.testing.assert_close(out, ref.reshape(1, -1, 32), atol=1e-5, rtol=1e-4)


def test_image_token_order(folders):
    """Changing one patch of one frame changes exactly that frame's group and that grid cell."""
    enc = _encoder("hf_image", folders["clip"], select_layer=0)  # embeddings: no mixing across tokens
    video = torch.randn(1, 2, 3, 2, 32, 32)
    changed = video.clone()
    changed[0, 1, :, 0, 8:16, 16:24] += 1.0  # clip 1, frame 0, patch row 1, column 2
    diff = (enc(changed) - enc(video)).abs().sum(-1).reshape(4, 17)
    hit = (diff > 1e-6).nonzero().tolist()
    assert hit == [[2, 1 + 1 * 4 + 2]]


def _video_reference(model, clip: torch.Tensor, layer: int) -> torch.Tensor:
    """Direct HF call on one clip [C, T, H, W] -> hidden_states[layer][0]."""
    frames = _renorm(clip.transpose(0, 1))  # [T, C, H, W]
    return model(pixel_values=frames[None], output_hidden_states=True).hidden_states[layer][0]


def test_videomae_tokens_and_resampling(folders):
    enc = _encoder("hf_video", folders["videomae"])
    layout = enc.layout(2, 2)
    assert (layout.groups, layout.prefix, layout.grid) == (2 * 2, 0, 4)  # T' = 4 // 2
    video = torch.randn(1, 2, 3, 2, 32, 32)  # 2 frames per clip -> resampled to 4: [0, 0, 0, 1]
    out = enc(video)
    assert out.shape == (1, layout.num_tokens, 32)
    model = VideoMAEModel.from_pretrained(folders["videomae"]).eval()
    ref = torch.cat([_video_reference(model, video[0, s][:, [0, 0, 0, 1]], -2) for s in range(2)])
    torch.testing.assert_close(out[0], ref, atol=1e-5, rtol=1e-4)


def test_timesformer_tokens_drop_cls_and_reorder(folders):
    enc = _encoder("hf_video", folders["timesformer"], keep_cls=True)
    layout = enc.layout(1, 2)
    assert (layout.groups, layout.prefix, layout.grid) == (2, 0, 4)
    video = torch.randn(1, 1, 3, 2, 32, 32)
    out = enc(video)
    model = TimesformerModel.from_pretrained(folders["timesformer"]).eval()
    ref = _video_reference(model, video[0, 0], -2)[1:]  # CLS dropped; patch-major, time innermost
    torch.testing.assert_close(out[0], ref.reshape(16, 2, 32).transpose(0, 1).reshape(32, 32), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,frame,slice_", [("videomae", 3, 1), ("videomae", 0, 0), ("timesformer", 1, 1),
                                               ("space_only", 1, 1), ("timesformer", 0, 0)])
def test_video_token_order(folders, name, frame, slice_):
    """One patch of one frame changed -> only (temporal slice, row, column) of that patch changes."""
    enc = _encoder("hf_video", folders[name], select_layer=0)
    frames = enc.num_frames
    video = torch.randn(1, 1, 3, frames, 32, 32)
    changed = video.clone()
    changed[0, 0, :, frame, 16:24, 0:8] += 1.0  # patch row 2, column 0
    diff = (enc(changed) - enc(video)).abs().sum(-1).reshape(enc.slices, 16)
    assert (diff > 1e-6).nonzero().tolist() == [[slice_, 2 * 4 + 0]]


def test_video_temporal_pool_and_grid_pool(folders):
    full = _encoder("hf_video", folders["videomae"])
    pooled = _encoder("hf_video", folders["videomae"], temporal_pool=True, pool=4)
    layout = pooled.layout(2, 4)
    assert (layout.groups, layout.prefix, layout.grid) == (2, 0, 1)
    video = torch.randn(1, 2, 3, 4, 32, 32)
    out, ref = pooled(video), full(video).reshape(2, 2, 16, 32)
    assert out.shape == (1, layout.num_tokens, 32)
    torch.testing.assert_close(out.reshape(2, 32), ref.mean(dim=(1, 2)), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name,key", [("hf_image", "clip"), ("hf_video", "timesformer")])
def test_frozen_and_weight_files(folders, name, key):
    enc = _encoder(name, folders[key])
    enc.train()
    assert not enc.training and not enc.model.training
    assert all(not p.requires_grad for p in enc.parameters())
    assert enc.dtype == torch.float32 and enc.device.type == "cpu"
    assert not enc(torch.randn(1, 1, 3, 2, 32, 32)).requires_grad
    files = {Path(f).name for f in enc.weight_files()}
    assert {"model.safetensors", "config.json"} <= files


@pytest.mark.parametrize("name,key", [("hf_image", "clip"), ("hf_video", "videomae")])
def test_on_meta_builds_without_weights(folders, name, key, tmp_path):
    for f in ("config.json", "preprocessor_config.json"):
        shutil.copy(folders[key] / f, tmp_path / f)
    enc = _encoder(name, tmp_path, on_meta=True)
    assert enc.device.type == "meta" and enc.out_dim == 32
    assert enc.layout(2, 2) == _encoder(name, folders[key]).layout(2, 2)


def test_errors(folders, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.encoder\.path.*nowhere"):
        _encoder("hf_image", tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"config\.json.*'bert'.*clip"):
        _encoder("hf_image", tmp_path)
    with pytest.raises(ValueError, match=r"videomae.*not supported by encoder 'hf_image'"):
        _encoder("hf_image", folders["videomae"])
    with pytest.raises(ValueError, match="select_layer"):
        _encoder("hf_image", folders["clip"], select_layer=5)


def test_stats_fallback_and_missing_weights(folders, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(folders["clip"], bare)
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        _encoder("hf_image", bare)
    video = torch.randn(1, 1, 3, 1, 32, 32)
    fallback = _encoder("hf_image", bare, mean=MODEL_MEAN, std=MODEL_STD)
    torch.testing.assert_close(fallback(video), _encoder("hf_image", folders["clip"])(video))
    weights = load_file(bare / "model.safetensors")
    del weights[next(k for k in weights if k.endswith("patch_embedding.weight"))]
    del weights[next(k for k in weights if k.endswith("post_layernorm.weight"))]  # optional: no error for it
    save_file(weights, bare / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks weights.*\['[a-z_.]*patch_embedding.weight'\]"):
        _encoder("hf_image", bare, mean=MODEL_MEAN, std=MODEL_STD)


def test_pixels_made_by_the_models_own_processor_are_fed_unchanged(folders):
    """data.video.processor = the encoder's folder: its pixels are what transformers would feed the model."""
    enc = _encoder("hf_image", folders["clip"], video=VideoConfig(processor=str(folders["clip"])))
    assert enc.exact
    video = torch.randn(1, 1, 3, 2, 32, 32)
    model = CLIPVisionModel.from_pretrained(folders["clip"]).eval()
    ref = torch.stack([model(pixel_values=video[0, 0, :, t][None], output_hidden_states=True).hidden_states[-2][0]
                       for t in range(2)])
    torch.testing.assert_close(enc(video), ref.reshape(1, -1, 32), atol=1e-5, rtol=1e-4)


def test_another_models_pixels_are_mapped_to_this_models_statistics(folders, tmp_path):
    """A context encoder fed pixels made by other rules (here mean = std = 0.5, rescale 1/255): each uint8
    value ends up as (u8 / 255 - model mean) / model std."""
    other = tmp_path / "other"
    shutil.copytree(folders["clip"], other)
    (other / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 32}, "crop_size": 32,
        "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    enc = _encoder("hf_image", folders["clip"], video=VideoConfig(processor=str(other)))
    assert not enc.exact
    u8 = torch.randint(0, 256, (2, 3, 32, 32)).float()
    view = (1, 3, 1, 1)
    expected = (u8 / 255 - torch.tensor(MODEL_MEAN).view(view)) / torch.tensor(MODEL_STD).view(view)
    torch.testing.assert_close(enc._prepare((u8 / 255 - 0.5) / 0.5), expected, atol=1e-5, rtol=1e-5)


def test_a_processor_whose_frames_differ_from_image_size_warns(folders, tmp_path):
    folder = tmp_path / "big_crop"
    shutil.copytree(folders["clip"], folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 48}, "crop_size": 48}))
    with pytest.warns(UserWarning, match=r"preprocessor_config.json: frames of 48x48.*image_size 32"):
        enc = _encoder("hf_image", folder, video=VideoConfig(processor=str(folder)))
    assert enc(torch.randn(1, 1, 3, 1, 48, 48)).shape == (1, 17, 32)
