"""Declarative freeze policy: each part is `frozen`, `lora` (llm only) or `full`, applied in one place."""
from __future__ import annotations

from peft import PeftModel

from skillgpt.config.schema import FreezeConfig, LoraConfig
from skillgpt.models.llm import add_lora, is_quantized
from skillgpt.models.skill_model import SkillGPT


def apply_freeze_policy(model: SkillGPT, policy: FreezeConfig, lora: LoraConfig) -> list[str]:
    """Set requires_grad on every parameter from `policy`; add LoRA when `policy.llm == "lora"`.

    Returns the sorted names of the trainable parameters.
    """
    if policy.encoder != "frozen":
        raise ValueError(f"freeze.encoder: {policy.encoder!r} is not supported; the encoder is always 'frozen'")
    if policy.projector not in ("frozen", "full"):
        raise ValueError(f"freeze.projector: expected frozen or full, got {policy.projector!r}")
    if policy.llm == "full" and is_quantized(model.causal_lm):
        raise ValueError("freeze.llm: full fine-tuning of an 8/4-bit LLM is not possible; use freeze.llm=lora "
                         "(QLoRA) or model.llm.quantization=null")
    if policy.llm == "lora" and not isinstance(model.llm, PeftModel):
        model.llm = add_lora(model.llm, lora)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    for p in model.projector.parameters():
        p.requires_grad_(policy.projector == "full")
    if policy.generation not in ("frozen", "full"):
        raise ValueError(f"freeze.generation: expected frozen or full, got {policy.generation!r}")
    if policy.generation == "full" and getattr(model, "generation", None) is None:
        raise ValueError("freeze.generation: full, but the model has no signal tokens (model.generation.*_tokens)")
    for p in (model.generation.parameters() if getattr(model, "generation", None) is not None else ()):
        p.requires_grad_(policy.generation == "full")
    for name, p in model.llm.named_parameters():
        if policy.llm == "full":
            p.requires_grad_(True)
        elif policy.llm == "lora":
            p.requires_grad_("lora_" in name)
        elif policy.llm == "frozen":
            p.requires_grad_(False)
        else:
            raise ValueError(f"freeze.llm: expected frozen, lora or full, got {policy.llm!r}")
    return sorted(n for n, p in model.named_parameters() if p.requires_grad)
