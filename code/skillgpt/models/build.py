"""Assemble SkillGPT from a config: encoder + projector + LLM, previous stage's weights, freeze policy."""
from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from skillgpt.config.schema import Config
from skillgpt.models.encoders import build_encoder
from skillgpt.models.freeze import apply_freeze_policy
from skillgpt.models.llm import load_llm, load_tokenizer
from skillgpt.models.projectors import build_projector
from skillgpt.models.skill_model import SkillGPT


def build_model(cfg: Config, on_meta: bool = False) -> tuple[SkillGPT, PreTrainedTokenizerBase]:
    """Build the model for `cfg.stage`: base weights, then `train.init_from`, then the freeze policy."""
    encoder = build_encoder(cfg.model.encoder, on_meta=on_meta)
    llm = load_llm(cfg.model.llm, on_meta=on_meta)
    projector = build_projector(cfg.model.projector, encoder.out_dim, llm.get_input_embeddings().embedding_dim)
    if on_meta:
        projector = projector.to("meta")
    model = SkillGPT(encoder, projector, llm)
    model.base_llm_path = cfg.model.llm.path
    if cfg.train.init_from and not on_meta:
        from skillgpt.checkpoint.delta import load_trained_parts, resolve_checkpoint

        load_trained_parts(model, resolve_checkpoint(cfg.train.init_from))
    apply_freeze_policy(model, cfg.freeze, cfg.model.llm.lora)
    return model, (None if on_meta else load_tokenizer(cfg.model.llm.path))
