"""Optional `torch.compile` of the parts that repeat: the LLM's decoder layers and the frozen encoders.

Compiling block by block (as torchtune does) keeps graphs small, compiles one graph for all layers of a
class, and leaves the data-dependent parts (placeholder scatter, supervised-position selection) eager.
"""
from __future__ import annotations

from skillgpt.models.skill_model import SkillGPT


def compile_blocks(model: SkillGPT, backend: str = "inductor") -> list[str]:
    """Compile (in place) every decoder layer of the LLM and every encoder; returns the compiled names.

    Decoder layers are the classes the transformers model declares as not splittable
    (`_no_split_modules`), so no module-name matching is involved."""
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ValueError(f"train.compile_backend: unknown torch.compile backend {backend!r}; expected one of {known}")
    lm = model.causal_lm
    layer_classes = set(getattr(lm, "_no_split_modules", None) or [])
    if not layer_classes:
        raise ValueError(f"train.compile: {type(lm).__name__} declares no decoder-layer classes "
                         "(_no_split_modules), so its layers cannot be found; set train.compile=false")
    compiled = []
    for name, module in lm.named_modules():
        if type(module).__name__ in layer_classes:
            module.compile(backend=backend)
            compiled.append(name)
    if not compiled:
        raise ValueError(f"train.compile: no module of class {sorted(layer_classes)} in {type(lm).__name__}")
    for name, encoder in model.encoder.items():
        encoder.compile(backend=backend)
        compiled.append(f"encoder.{name}")
    return compiled
