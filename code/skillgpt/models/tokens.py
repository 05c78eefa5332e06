"""Placeholder token counts as layout arithmetic from the config: no model, no weights.

`placeholder_tokens(cfg)` equals ``build_model(cfg)[0].placeholder_tokens()`` (tests/data/test_validate.py
checks presets and encoder/projector combinations), so `skillgpt data validate` can tokenize samples
without building a model. The one file read is a Hugging Face encoder's ``config.json`` (through its
transformers config class: image size, patch size, frames), which fixes its patch grid.

`layouts` is also what `build_model` uses, with the built encoders' own `layout` methods.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from skillgpt.config.schema import Config, EncoderConfig, ProjectorConfig
from skillgpt.constants import PLACEHOLDER_OF
from skillgpt.models.layout import TokenLayout

LayoutOf = Callable[[str, int, int, int], TokenLayout]  # (branch, clips, frames per clip, crops) -> its layout


def branch_names(cfg: Config) -> list[str]:
    """The encoder branches the config enables: video (always), context, audio."""
    return ["video"] + (["context"] if cfg.model.context.enabled else []) + (["audio"] if cfg.model.audio.enabled else [])


def video_tower(cfg: Config) -> list[str]:
    """Branches filling a `<video>`/`<image>`, in token order."""
    order = ["context", "video"] if cfg.model.context.position == "before" else ["video", "context"]
    return [n for n in order if n in branch_names(cfg)]


def media_crops(cfg: Config) -> dict[str, int]:
    """Spatial crops per clip in each kind's pixels: videos ``data.video.num_crops``, images one (centre)."""
    return {"video": cfg.data.video.num_crops, "image": 1}


def layouts(cfg: Config, layout_of: LayoutOf) -> dict[str, dict[str, TokenLayout]]:
    """Token layout of each branch for each placeholder kind: {kind: {branch: layout}}."""
    v, names, crops = cfg.data.video, branch_names(cfg), media_crops(cfg)
    fused_views = len(cfg.data.views) if cfg.data.views and cfg.data.view_mode == "fuse" else 1
    video = {"video": replace(layout_of("video", v.num_clips, v.frames_per_clip, crops["video"]), views=fused_views)}
    image = {"video": layout_of("video", 1, v.frames_per_clip, crops["image"])}
    if "context" in names:  # context frames are picked from every crop (SkillGPT.encode)
        frames = cfg.model.context.frames
        video["context"] = replace(layout_of("context", frames, 1, crops["video"]), views=fused_views)
        image["context"] = layout_of("context", frames, 1, crops["image"])
    out = {"video": video, "image": image}
    if "audio" in names:
        out["audio"] = {"audio": layout_of("audio", cfg.data.audio.num_clips, 1, 1)}
    return out


def _grid(side: int, pool: int) -> int:
    return 0 if side == 0 else max(1, round(side / pool))


def _imagebind_layout(enc: EncoderConfig, clips: int, crops: int) -> TokenLayout:
    """ImageBind video: one group per clip (crops averaged) or, for clip_tokens, per clip x crop (the
    stem's temporal kernel eats the clip's frames)."""
    if enc.output == "pooled":
        return TokenLayout(groups=1, prefix=1, grid=0)
    if enc.output == "clip_embeddings":
        return TokenLayout(groups=clips, prefix=1, grid=0)
    grid = _grid(enc.image_size // enc.patch_size, enc.pool)
    return TokenLayout(groups=clips * crops, prefix=int(enc.keep_cls), grid=grid)


def _audio_layout(cfg: Config, clips: int) -> TokenLayout:
    """ImageBind audio: a clip's mel x time patches are all `prefix` tokens (the grid is not square)."""
    enc, audio = cfg.model.encoder, cfg.model.audio
    if audio.output == "pooled":
        return TokenLayout(groups=1, prefix=1, grid=0)
    if audio.output == "clip_embeddings":
        return TokenLayout(groups=clips, prefix=1, grid=0)
    rows = (enc.audio_mel_bins - enc.audio_kernel_size) // enc.audio_stride + 1
    cols = (enc.audio_target_len - enc.audio_kernel_size) // enc.audio_stride + 1
    return TokenLayout(groups=clips, prefix=int(audio.keep_cls) + rows * cols, grid=0)


def _hf_layout(enc: EncoderConfig, clips: int, frames_per_clip: int, crops: int) -> TokenLayout:
    """CLIP/SigLIP: one group per frame; VideoMAE/TimeSformer: one per temporal slice (or per clip with
    temporal_pool); every crop of a clip counts as a clip. Reads the folder's config.json only (as the
    encoder does), never its weights."""
    import transformers

    from skillgpt.models.encoders.hf import IMAGE_MODELS, VIDEO_MODELS, HFEncoderBase

    folder = HFEncoderBase._check_folder(enc.path)
    models = IMAGE_MODELS if enc.name == "hf_image" else VIDEO_MODELS
    model_type = transformers.AutoConfig.from_pretrained(folder).model_type
    if model_type not in models:
        raise ValueError(f"{folder / 'config.json'}: model_type {model_type!r} is not supported by encoder "
                         f"{enc.name!r}; supported model_type values: {sorted(models)}")
    spec = models[model_type]
    config = getattr(transformers, spec.model_cls).config_class.from_pretrained(folder)
    side = HFEncoderBase._int_size(config.image_size) // HFEncoderBase._int_size(config.patch_size)
    grid = _grid(side, int(enc.pool))
    clips *= crops
    if enc.name == "hf_image":
        return TokenLayout(groups=clips * frames_per_clip, prefix=int(enc.keep_cls and spec.has_cls), grid=grid)
    tubelet = int(getattr(config, "tubelet_size", 1)) if model_type == "videomae" else 1
    slices = 1 if enc.temporal_pool else int(config.num_frames) // tubelet
    return TokenLayout(groups=clips * slices, prefix=0, grid=grid)


def encoder_layout(enc: EncoderConfig, clips: int, frames_per_clip: int, crops: int = 1) -> TokenLayout:
    """Layout of a video encoder's output for `clips` clips of `crops` spatial crops of `frames_per_clip`
    frames, from its config."""
    if enc.name == "imagebind":
        return _imagebind_layout(enc, clips, crops)
    if enc.name in ("hf_image", "hf_video"):
        return _hf_layout(enc, clips, frames_per_clip, crops)
    raise KeyError(f"model.encoder.name: unknown encoder {enc.name!r}; known: hf_image, hf_video, imagebind")


def projector_tokens(proj: ProjectorConfig, layout: TokenLayout) -> int:
    """Tokens a projector emits for `layout` (see skillgpt.models.projectors for each projector's rule)."""
    rules = {
        "linear": lambda: layout.num_tokens,
        "mlp2x_gelu": lambda: layout.num_tokens,
        "pool": lambda: layout.views * layout.groups * (layout.prefix + _grid(layout.grid, proj.pool) ** 2),
        "resampler": lambda: layout.views * layout.groups * proj.num_queries,
        "prototype": lambda: proj.num_prototypes,
        "view_fusion": lambda: layout.per_view,
    }
    if proj.name not in rules:
        raise KeyError(f"model.projector.name: unknown projector {proj.name!r}; known: {sorted(rules)}")
    return rules[proj.name]()


def placeholder_tokens(cfg: Config) -> dict[str, int]:
    """Token count of every placeholder the configured model fills, e.g. {"<video>": 16, "<image>": 2}."""
    m = cfg.model
    encoders = {"video": m.encoder, "context": m.context.encoder}
    projectors = {"video": m.projector, "context": m.context.projector, "audio": m.audio.projector}

    def layout_of(branch: str, clips: int, frames: int, crops: int) -> TokenLayout:
        if branch == "audio":
            return _audio_layout(cfg, clips)
        return encoder_layout(encoders[branch], clips, frames, crops)

    lay = layouts(cfg, layout_of)
    towers = {"video": video_tower(cfg), "image": video_tower(cfg), "audio": ["audio"]}
    return {PLACEHOLDER_OF[kind]: sum(projector_tokens(projectors[b], lay[kind][b]) for b in towers[kind])
            for kind in lay}
