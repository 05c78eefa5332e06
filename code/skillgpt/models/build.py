"""Assemble SkillGPT from a config: encoders + projectors + LLM, previous stage's weights, freeze policy."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from skillgpt.config.schema import Config
from skillgpt.models.encoders import build_encoder
from skillgpt.models.freeze import apply_freeze_policy
from skillgpt.models.layout import TokenLayout
from skillgpt.models.llm import DTYPES, load_llm, load_tokenizer
from skillgpt.models.projectors import build_projector
from skillgpt.models.skill_model import Branch, SkillGPT
from skillgpt.models.tokens import layouts, media_crops


def _encoders(cfg: Config, on_meta: bool) -> dict[str, nn.Module]:
    """The frozen encoders by branch name: video (always), context and audio when enabled."""
    m = cfg.model
    if m.audio.enabled:
        if m.encoder.name != "imagebind":
            raise ValueError(f"model.audio.enabled needs model.encoder.name: imagebind (got {m.encoder.name!r}); "
                             "the audio branch is ImageBind's and shares its checkpoint")
        from skillgpt.models.encoders.imagebind_audio import ImageBindAudioEncoder
        from skillgpt.models.encoders.imagebind_encoder import ImageBindVideoEncoder

        video = ImageBindVideoEncoder(m.encoder, with_audio=True, on_meta=on_meta)
        audio_cfg = replace(m.encoder, output=m.audio.output, keep_cls=m.audio.keep_cls,
                            normalize_tokens=m.audio.normalize_tokens)
        out = {"video": video, "audio": ImageBindAudioEncoder(video.model, audio_cfg)}
    else:
        out = {"video": build_encoder(m.encoder, cfg.data.video, on_meta=on_meta)}
    if m.context.enabled:
        out["context"] = build_encoder(m.context.encoder, cfg.data.video, on_meta=on_meta)
    declared = {"video": m.encoder.dtype, "audio": m.encoder.dtype, "context": m.context.encoder.dtype}
    for name, encoder in out.items():  # the one dtype each frozen encoder runs in (train, eval, cache)
        encoder.to(DTYPES[declared[name]])
    return out


def _layouts(cfg: Config, encoders: dict[str, nn.Module]) -> dict[str, dict[str, TokenLayout]]:
    """Token layout of each branch for each placeholder kind (video, image, audio), from the built encoders."""
    def layout_of(name: str, clips: int, frames: int, crops: int) -> TokenLayout:
        return encoders[name].layout(clips) if name == "audio" else encoders[name].layout(clips, frames, crops)

    return layouts(cfg, layout_of)


def build_model(cfg: Config, on_meta: bool = False) -> tuple[SkillGPT, PreTrainedTokenizerBase]:
    """Build the model for `cfg.stage`: base weights, then `train.init_from`, then the freeze policy."""
    encoders = _encoders(cfg, on_meta)
    llm = load_llm(cfg.model.llm, on_meta=on_meta)
    width = llm.get_input_embeddings().embedding_dim
    layouts = _layouts(cfg, encoders)
    projector_cfgs = {"video": cfg.model.projector, "context": cfg.model.context.projector,
                      "audio": cfg.model.audio.projector}
    projectors = nn.ModuleDict({
        name: build_projector(projector_cfgs[name], enc.out_dim, width, layouts["audio" if name == "audio" else "video"][name])
        for name, enc in encoders.items()
    })
    if on_meta:
        projectors = projectors.to("meta")
    order = ["context", "video"] if cfg.model.context.position == "before" else ["video", "context"]
    branches = {
        "video": [Branch(n, cfg.model.context.frames if n == "context" else None) for n in order if n in encoders],
        "audio": [Branch("audio")] if "audio" in encoders else [],
    }
    model = SkillGPT(nn.ModuleDict(encoders), projectors, llm, layouts, branches, media_crops(cfg))
    model.base_llm_path = cfg.model.llm.path
    tokenizer = None if on_meta else load_tokenizer(cfg.model.llm.path)
    if any(cfg.model.generation.counts().values()):
        if on_meta:
            raise ValueError("model.generation: signal tokens need the LLM's tokenizer; build it with weights (not on meta)")
        model.generation = generation_head(cfg.model.generation, llm, tokenizer)
    if cfg.train.init_from and not on_meta:
        from skillgpt.checkpoint.delta import load_trained_parts
        from skillgpt.checkpoint.lineage import ancestry, parent_checkpoint

        # the recorded parent (never "newest" again), after the ancestors whose parts it still needs
        for ckpt in ancestry(parent_checkpoint(cfg)):
            load_trained_parts(model, ckpt, cfg)
    apply_freeze_policy(model, cfg.freeze, cfg.model.llm.lora)
    return model, tokenizer


def generation_head(gen: Any, llm: nn.Module, tokenizer: PreTrainedTokenizerBase) -> nn.Module:
    """NExT-GPT's decoder side on `llm`: signal tokens added to `tokenizer` and the LLM (before any LoRA), their
    rows and one output projector per ``llm_layers`` entry and modality (skillgpt.generation.head)."""
    from skillgpt.generation.head import GenerationHead

    return GenerationHead(llm, tokenizer, gen.counts(), output_projector_configs(gen), layers=list(gen.llm_layers))


def output_projector_configs(gen: Any, in_dim: int = 4096) -> dict[str, Any]:
    """{modality: OutputProjectorConfig} of `model.generation` (modalities with signal tokens; `in_dim`: the
    LLM width, which GenerationHead sets itself)."""
    from skillgpt.models.output_projectors import OutputProjectorConfig

    shapes = {"image": gen.image_shape, "video": gen.video_shape, "audio": gen.audio_shape}
    return {m: OutputProjectorConfig(kind=gen.projector, in_dim=in_dim, out_dim=int(shapes[m][1]),
                                     num_output_tokens=int(shapes[m][0]), hidden_dim=gen.hidden_dim,
                                     num_heads=gen.heads, num_encoder_layers=gen.encoder_layers,
                                     num_decoder_layers=gen.decoder_layers)
            for m, n in gen.counts().items() if n > 0}
