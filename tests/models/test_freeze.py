"""The exact trainable parameters of each stage, and that LoRA really learns in stage 2."""
from __future__ import annotations

import pytest
import torch

from skillgpt.config.loader import ConfigError
from skillgpt.data.dataset import SkillDataset, collate
from skillgpt.models.build import build_model

PROJECTOR = {"projector.video.0.weight", "projector.video.0.bias", "projector.video.2.weight", "projector.video.2.bias"}


def _lora_names(layers: int) -> set[str]:
    """The tiny preset puts LoRA on every attention and MLP projection."""
    modules = [f"self_attn.{m}_proj" for m in "qkvo"] + [f"mlp.{m}_proj" for m in ("gate", "up", "down")]
    return {
        f"llm.base_model.model.model.layers.{i}.{m}.lora_{ab}.default.weight"
        for i in range(layers) for m in modules for ab in "AB"
    }


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_stage1_real_policy_trains_projector_only(tiny_workspace):
    model, _ = build_model(tiny_workspace.config(1, "freeze", "freeze.llm=frozen"))
    assert _trainable(model) == PROJECTOR


def test_stage1_tiny_policy_trains_projector_and_whole_llm(tiny_workspace):
    model, _ = build_model(tiny_workspace.config(1, "freeze"))
    llm = {f"llm.{n}" for n, _ in model.llm.named_parameters()}
    assert _trainable(model) == PROJECTOR | llm
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_stage2_trains_projector_and_lora_and_lora_gets_gradients(tiny_workspace):
    cfg = tiny_workspace.config(2, "freeze", "train.init_from=null")
    model, tok = build_model(cfg)
    layers = model.causal_lm.config.num_hidden_layers
    assert _trainable(model) == PROJECTOR | _lora_names(layers)

    ds = SkillDataset(cfg.data.train, cfg.data, tok, cfg.model.llm.template,
                      model.placeholder_tokens(), cfg.model.llm.max_length)
    batch = collate([ds[0], ds[1]], tok.pad_token_id)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):  # lora_B starts at zero, so lora_A's gradient is zero until B has moved once
        opt.zero_grad()
        model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["media"]).backward()
        opt.step()
    named = dict(model.named_parameters())
    for name in _trainable(model):
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name
    frozen = [n for n, p in named.items() if not p.requires_grad and p.grad is not None]
    assert frozen == []


def test_config_load_refuses_a_trainable_encoder(tiny_workspace):
    """freeze.encoder: full is refused when the config loads (not half-applied when the model is built)."""
    with pytest.raises(ConfigError, match=r"freeze.encoder: 'full' is not supported, only 'frozen'"):
        tiny_workspace.config(2, "freeze", "train.init_from=null", "freeze.encoder=full")
