"""Hugging Face pixel rules (data/hf_preprocessing.py) against the transformers processors themselves.

Every config is written as a model folder (config.json + preprocessor_config.json); SkillGPT's pixels must
equal what the processor (image and video variants, the ones transformers 5 picks) makes of the same
frames within 1e-5, on landscape and portrait frames, through load_video / load_image and up to the
tensor the Hugging Face model receives.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoVideoProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    SiglipImageProcessor,
    SiglipVisionConfig,
    TimesformerConfig,
    VideoMAEConfig,
)

from skillgpt.config.schema import EncoderConfig, VideoConfig
from skillgpt.data.hf_preprocessing import preprocess_frames
from skillgpt.pixel_rules import read_rules
from skillgpt.data.cached_features import preprocessing_signature
from skillgpt.data.video import load_video

REPO = Path(__file__).resolve().parents[2]
MEDIA = REPO / "tests" / "fixtures" / "preprocessing"
TOL = 1e-5
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
MEAN, STD = [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]

# name -> (config.json class and image_size, preprocessor_config.json, how transformers loads it)
CASES: dict[str, tuple] = {
    "clip-bicubic-crop": (CLIPVisionConfig, 16, {"image_processor_type": "CLIPImageProcessor", "size": {
        "shortest_edge": 20}, "crop_size": {"height": 16, "width": 16}, "resample": 3, "image_mean": MEAN,
        "image_std": STD}, AutoImageProcessor),
    "clip-legacy-ints": (CLIPVisionConfig, 16, {"feature_extractor_type": "CLIPFeatureExtractor", "size": 18,
                                                "crop_size": 16, "resample": 3, "do_center_crop": True},
                         AutoImageProcessor),
    "clip-nearest-pad-no-normalise": (CLIPVisionConfig, 24, {"image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": 20}, "crop_size": {"height": 24, "width": 24}, "resample": 0,
        "do_normalize": False}, AutoImageProcessor),
    "clip-lanczos-longest-edge": (CLIPVisionConfig, 16, {"image_processor_type": "CLIPImageProcessor", "size": {
        "shortest_edge": 30, "longest_edge": 40}, "crop_size": {"height": 16, "width": 16}, "resample": 1},
        AutoImageProcessor),
    "siglip-square-bilinear": (SiglipVisionConfig, 24, {"image_processor_type": "SiglipImageProcessor", "size": {
        "height": 24, "width": 24}, "resample": 2, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "rescale_factor": 0.004}, AutoImageProcessor),
    "siglip-defaults-by-model-type": (SiglipVisionConfig, 224, {"image_mean": MEAN, "image_std": STD},
                                      SiglipImageProcessor),  # AutoImageProcessor lacks siglip_vision_model
    "videomae-image": (VideoMAEConfig, 16, {"image_processor_type": "VideoMAEImageProcessor", "size": {
        "shortest_edge": 18}, "crop_size": {"height": 16, "width": 16}, "resample": 2}, AutoImageProcessor),
    "videomae-video": (VideoMAEConfig, 16, {"video_processor_type": "VideoMAEVideoProcessor", "size": {
        "shortest_edge": 18}, "crop_size": {"height": 16, "width": 16}, "resample": 2, "do_rescale": False},
        AutoVideoProcessor),
    "timesformer-video": (TimesformerConfig, 16, {"video_processor_type": "TimesformerVideoProcessor", "size": {
        "shortest_edge": 17}, "crop_size": {"height": 16, "width": 16}, "image_mean": MEAN}, AutoVideoProcessor),
}


def _folder(root: Path, name: str, config_cls, image_size: int, pre: dict) -> Path:
    folder = root / name
    config_cls(**TINY, image_size=image_size, patch_size=8).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_pre")
    return {name: _folder(root, name, cls, size, pre) for name, (cls, size, pre, _) in CASES.items()}


def _frames(height: int, width: int, count: int = 3, seed: int = 0) -> torch.Tensor:
    """uint8 [F, 3, H, W]: smooth gradients plus noise and hard edges (every filter differs on them)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack([yy, xx, (yy + xx) / 2]) * 200
    frames = base + torch.randint(0, 56, (count, 3, height, width), generator=g)
    frames[:, :, height // 3: height // 2] = 255.0
    return frames.clamp(0, 255).to(torch.uint8)


def _theirs(folder: Path, auto, frames: torch.Tensor) -> torch.Tensor:
    """The transformers processor's pixel_values [F, 3, h, w] for frames [F, 3, H, W] (HWC numpy input,
    as decoders give them)."""
    proc = auto.from_pretrained(folder)
    arrays = [f.permute(1, 2, 0).numpy() for f in frames]
    if auto is AutoVideoProcessor:
        return proc(videos=[np.stack(arrays)], return_tensors="pt")["pixel_values"][0]
    out = proc(images=arrays, return_tensors="pt")["pixel_values"]
    return out[0] if out.ndim == 5 else out  # VideoMAEImageProcessor: the frames as one video


@pytest.mark.parametrize("shape", [(45, 70), (70, 45), (30, 30)], ids=["landscape", "portrait", "square"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_pixels_equal_the_transformers_processor(folders, name, shape):
    frames = _frames(*shape)
    rules = read_rules(folders[name])
    ours = preprocess_frames(frames, rules)[0]
    theirs = _theirs(folders[name], CASES[name][3], frames)
    assert ours.shape == theirs.shape and ours.dtype == torch.float32
    assert (ours - theirs).abs().max().item() <= TOL


def test_the_configs_differ_where_they_should(folders):
    """The cases exercise different filters and crops: ImageBind-style float resizing would not match."""
    frames = _frames(45, 70)
    a = preprocess_frames(frames, read_rules(folders["clip-bicubic-crop"]))[0]
    b = preprocess_frames(frames, read_rules(folders["videomae-image"]))[0]
    assert (a - b).abs().max() > 0.1
    rules = read_rules(folders["siglip-defaults-by-model-type"])
    assert (rules.processor, rules.height, rules.width, rules.resample) == ("SiglipImageProcessor", 224, 224, 3)


def test_three_crops_include_the_processor_centre_crop(folders):
    frames = _frames(45, 70)
    rules = read_rules(folders["clip-bicubic-crop"])
    crops = preprocess_frames(frames, rules, num_crops=3)  # [3, F, 3, 16, 16]: left, centre, right
    torch.testing.assert_close(crops[1], preprocess_frames(frames, rules)[0], rtol=0, atol=0)
    full = preprocess_frames(frames, rules.__class__(**{**rules.__dict__, "do_center_crop": False, "crop": None,
                                                          "shortest_edge": None, "height": 20, "width": 31}))[0]
    torch.testing.assert_close(crops[0], full[..., 2:18, :16], rtol=0, atol=0)  # top: int((20 - 16) / 2)
    torch.testing.assert_close(crops[2], full[..., 2:18, -16:], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["clip-bicubic-crop", "videomae-video"])
def test_load_video_follows_the_processor(folders, name):
    """load_video with data.video.processor: the processor's pixels of the frames it samples."""
    import decord

    path = MEDIA / "portrait_30_180x320.mp4"
    cfg = VideoConfig(num_clips=2, frames_per_clip=2, processor=str(folders[name]))
    ours = load_video(path, cfg)  # [S, 3, T, h, w]
    from skillgpt.data.video import sample_frame_indices

    reader = decord.VideoReader(str(path))
    clips = sample_frame_indices(len(reader), float(reader.get_avg_fps()), cfg)
    frames = torch.from_numpy(reader.get_batch([i for c in clips for i in c]).asnumpy()).permute(0, 3, 1, 2)
    theirs = _theirs(folders[name], CASES[name][3], frames).reshape(2, 2, 3, 16, 16).transpose(1, 2)
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() <= TOL


def test_load_image_follows_the_processor(folders, tmp_path):
    from skillgpt.config.schema import DataConfig
    from skillgpt.data.media import load_image

    rgba = np.asarray(Image.open(MEDIA / "still_400x300.png").convert("RGBA")).copy()
    rgba[:100, :, 3] = 60  # transparency: the processor composites it on white
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    folder = folders["clip-bicubic-crop"]
    for png in (MEDIA / "still_400x300.png", tmp_path / "alpha.png"):
        data = DataConfig(video=VideoConfig(frames_per_clip=2, processor=str(folder)))
        ours = load_image(png, data)  # [1, 3, T, 16, 16]
        theirs = AutoImageProcessor.from_pretrained(folder)(images=Image.open(png), return_tensors="pt")["pixel_values"]
        assert ours.shape == (1, 3, 2, 16, 16)
        assert (ours[0, :, 0] - theirs[0]).abs().max().item() <= TOL
        torch.testing.assert_close(ours[0, :, 1], ours[0, :, 0], rtol=0, atol=0)


def test_the_model_receives_the_processors_pixels(folders, tmp_path):
    """Through the encoder: the pixel_values CLIP's forward gets are the processor's (fails on the
    ImageBind-pixels-renormalised path, off by far more than 1e-5)."""
    from skillgpt.models.encoders import build_encoder

    folder = tmp_path / "clip"
    CLIPVisionModel(CLIPVisionConfig(**TINY, image_size=16, patch_size=8)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(CASES["clip-bicubic-crop"][2]))
    data = VideoConfig(num_clips=1, frames_per_clip=2, resolution=16, processor=str(folder))
    enc = build_encoder(EncoderConfig(name="hf_image", path=str(folder)), data)
    assert enc.exact
    seen = []
    enc.model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["pixel_values"]), with_kwargs=True)
    path = MEDIA / "pal_25_320x240.mp4"
    enc(load_video(path, data)[None])
    import decord

    from skillgpt.data.video import sample_frame_indices

    reader = decord.VideoReader(str(path))
    idx = sample_frame_indices(len(reader), float(reader.get_avg_fps()), data)[0]
    frames = torch.from_numpy(reader.get_batch(idx).asnumpy()).permute(0, 3, 1, 2)
    theirs = _theirs(folder, AutoImageProcessor, frames)
    assert (seen[0] - theirs).abs().max().item() <= TOL
    # ImageBind's pixels mapped to the model's statistics (the previous behaviour) are far off
    old = build_encoder(EncoderConfig(name="hf_image", path=str(folder)), VideoConfig(num_clips=1, frames_per_clip=2,
                                                                                        resolution=16))
    seen.clear()
    old.model.register_forward_pre_hook(lambda _m, _a, kw: seen.append(kw["pixel_values"]), with_kwargs=True)
    old(load_video(path, VideoConfig(num_clips=1, frames_per_clip=2, resolution=16))[None])
    assert not old.exact and (seen[0] - theirs).abs().max().item() > 0.05


BAD = {  # preprocessor_config.json -> the field the error must name
    "do_pad": {"image_processor_type": "CLIPImageProcessor", "do_pad": True},
    "crop_pct": {"image_processor_type": "CLIPImageProcessor", "crop_pct": 0.9},
    "image_processor_type": {"image_processor_type": "ConvNextImageProcessor"},
    "resample": {"image_processor_type": "CLIPImageProcessor", "resample": 5},
    "do_center_crop": {"image_processor_type": "CLIPImageProcessor", "do_center_crop": False},
    "size": {"image_processor_type": "CLIPImageProcessor", "size": {"max_height": 30, "max_width": 30}},
    "do_sample_frames": {"video_processor_type": "VideoMAEVideoProcessor", "do_sample_frames": True},
    "image_mean": {"image_processor_type": "CLIPImageProcessor", "image_mean": [0.5, 0.5]},
}


@pytest.mark.parametrize("field", sorted(BAD))
def test_configs_skillgpt_cannot_honour_name_file_and_field(tmp_path, field):
    folder = _folder(tmp_path, "bad", CLIPVisionConfig, 16, BAD[field])
    with pytest.raises(ValueError, match=rf"{folder / 'preprocessor_config.json'}: field '{field}'"):
        read_rules(folder)


def test_missing_type_with_unknown_model_type_names_the_field(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (folder / "preprocessor_config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"field 'image_processor_type' is missing.*'bert'"):
        read_rules(folder)


def test_feature_cache_signature_covers_the_rules(folders, tmp_path):
    imagebind = preprocessing_signature(VideoConfig())
    clip = preprocessing_signature(VideoConfig(processor=str(folders["clip-bicubic-crop"])))
    assert isinstance(imagebind, str) and clip != imagebind and clip["resample"] == 3
    other = _folder(tmp_path, "bilinear", CLIPVisionConfig, 16, {**CASES["clip-bicubic-crop"][2], "resample": 2})
    assert preprocessing_signature(VideoConfig(processor=str(other))) != clip
    moved = _folder(tmp_path, "moved", CLIPVisionConfig, 16, CASES["clip-bicubic-crop"][2])
    assert preprocessing_signature(VideoConfig(processor=str(moved))) == clip  # content, not path


def test_config_loader_follows_the_encoder_folder(folders, tmp_path):
    from skillgpt.config import load_config

    stage = REPO / "config" / "stage_2.yaml"
    base = ["preset=tiny", "model.llm.path=unused", "train.init_from=null"]
    folder = str(folders["clip-bicubic-crop"])
    assert load_config(stage, base).data.video.processor is None  # ImageBind's reference
    hf = load_config(stage, [*base, "model.encoder.name=hf_image", f"model.encoder.path={folder}"])
    assert hf.data.video.processor == folder
    opt_out = load_config(stage, [*base, "model.encoder.name=hf_image", f"model.encoder.path={folder}",
                                  "data.video.processor=null"])
    assert opt_out.data.video.processor is None
    bare = tmp_path / "bare"
    bare.mkdir()  # no preprocessor_config.json: ImageBind pixels, renormalised by the encoder
    assert load_config(stage, [*base, "model.encoder.name=hf_image",
                               f"model.encoder.path={bare}"]).data.video.processor is None
