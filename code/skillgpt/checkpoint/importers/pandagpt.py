"""PandaGPT delta checkpoints -> SkillGPT checkpoints (and the layout NExT-GPT's importer, ``nextgpt.py``, shares).

PandaGPT's ``pytorch_model.pt`` (agent.save_model) holds the trained tensors only: ``llama_proj.{weight,bias}``
and peft-0.3 LoRA keys ``llama_model.base_model.model.model.layers.N.self_attn.{q,k,v,o}_proj.lora_{A,B}.default.weight``;
r comes from the tensors, alpha and dropout from its ``openllama_peft.yaml`` (32, 0.1), not from the file.
The model: the normalised ImageBind embedding of the image/video -> ``llama_proj`` -> one LLM token
(``model.encoder.output: pooled``), prompt template ``pandagpt``.

NExT-GPT's delta is PandaGPT's layout plus its vocabulary and output projectors: see ``nextgpt.py``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch

from skillgpt.checkpoint.importers.common import Adapter, load_state, make_config, write_checkpoint

LORA_KEY = re.compile(r"llama_model\.base_model\.model\.(model\.layers\.\d+\.self_attn\.([qkvo]_proj))"
                      r"\.lora_([AB])(?:\.default)?\.weight")
PROJECTOR_KEYS = ("llama_proj.weight", "llama_proj.bias")
# openllama_peft.yaml (PandaGPT) and NExT-GPT's stage configs
DEFAULT_LORA = {"alpha": 32, "dropout": 0.1}


def _delta_file(src: Path) -> Path:
    return src / "pytorch_model.pt" if src.is_dir() else src


def _encoder_settings(encoder: str | None) -> dict[str, Any]:
    """ImageBind-huge as PandaGPT runs it: one pooled, normalised embedding per image/video (5 clips x
    2 frames x 3 crops averaged, ImageBind's data.py)."""
    return {
        "model.encoder": {"name": "imagebind", "checkpoint": encoder, "image_size": 224, "vision_width": 1280,
                          "vision_layers": 32, "vision_heads": 16, "out_dim": 1024, "output": "pooled"},
        "model.projector": {"name": "linear"},
        "data.video": {"num_clips": 5, "clip_duration": 2.0, "frames_per_clip": 2, "resolution": 224, "num_crops": 3},
    }


def split_delta(path: Path, state: Mapping[str, torch.Tensor], extra: re.Pattern | None = None
                ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(projector, peft adapter weights, other keys matching `extra`); any other key is an error."""
    projector, lora, other, unknown = {}, {}, {}, []
    for key, value in state.items():
        match = LORA_KEY.fullmatch(key)
        if key in PROJECTOR_KEYS:
            projector["video." + key.split(".", 1)[1]] = value
        elif match:
            lora[f"base_model.model.{match.group(1)}.lora_{match.group(3)}.weight"] = value
        elif extra is not None and extra.fullmatch(key):
            other[key] = value
        else:
            unknown.append(key)
    missing = [k for k in PROJECTOR_KEYS if "video." + k.split(".", 1)[1] not in projector]
    if unknown or missing:
        raise ValueError(f"{path}: not a PandaGPT-layout delta checkpoint: "
                         + "; ".join(p for p in (f"unknown keys {sorted(unknown)[:8]}" if unknown else "",
                                                 f"missing keys {missing}" if missing else "") if p))
    pairs = {k.rsplit(".lora_", 1)[0] for k in lora}
    unpaired = sorted(p for p in pairs if f"{p}.lora_A.weight" not in lora or f"{p}.lora_B.weight" not in lora)
    if unpaired:
        raise ValueError(f"{path}: LoRA keys without their A/B partner: {unpaired[:4]}")
    return projector, lora, other


def _adapter(path: Path, lora: dict[str, torch.Tensor], options: Mapping[str, Any]) -> Adapter | None:
    if not lora:
        return None
    ranks = {v.shape[0] for k, v in lora.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise ValueError(f"{path}: LoRA ranks differ between modules ({sorted(ranks)})")
    targets = sorted({k.rsplit(".lora_", 1)[0].rsplit(".", 1)[1] for k in lora})
    return Adapter(lora, r=ranks.pop(), alpha=float(options.get("lora_alpha", DEFAULT_LORA["alpha"])),
                   dropout=float(options.get("lora_dropout", DEFAULT_LORA["dropout"])), target_modules=targets)


def _require_llm(base_llm: Path | None, system: str) -> Path:
    if base_llm is None:
        raise ValueError(f"--base-llm: a {system} delta holds only the trained parts; pass the Vicuna v0 folder "
                         "(Hugging Face format) it was trained on")
    if not (base_llm / "config.json").is_file():
        raise FileNotFoundError(f"--base-llm: {base_llm} has no config.json (expected a Hugging Face LLM folder)")
    return base_llm


def _config(out: Path, base_llm: Path, options: Mapping[str, Any], preset: str, *more: Mapping[str, Any]) -> Any:
    """The system's settings, then `more` (e.g. NExT-GPT's model.generation), then the user's --set."""
    settings: dict[str, Any] = {"preset": preset, "run_name": out.name, "stage": 2,
                                **_encoder_settings(options.get("encoder")),
                                "model.llm": {"path": str(base_llm.absolute()), "dtype": "float16",
                                              "template": "pandagpt", "max_length": 1024}}
    return make_config(settings, out, *more, options.get("settings") or {})


def _linear_check(path: Path, projector: Mapping[str, torch.Tensor], width: int) -> None:
    weight = projector["video.weight"]
    if weight.dim() != 2 or weight.shape[0] != width:
        raise ValueError(f"{path}: llama_proj.weight has shape {list(weight.shape)}; expected [{width}, encoder "
                         "out_dim] for the base LLM's hidden size")


def import_pandagpt(src: Path, out: Path, base_llm: Path | None, **options: Any) -> Path:
    """PandaGPT ``pytorch_model.pt`` (or its folder) + the Vicuna base -> SkillGPT run folder `out`.
    Options: encoder (ImageBind checkpoint path), lora_alpha, lora_dropout, settings (config overrides)."""
    path = _delta_file(src)
    llm = _require_llm(base_llm, "PandaGPT")
    projector, lora, _ = split_delta(path, load_state(path))
    cfg = _config(out, llm, options, "vicuna-7b-v0")
    _linear_check(path, projector, _hidden_size(llm))
    cfg.model.encoder.out_dim = int(projector["video.weight"].shape[1])
    return write_checkpoint(out, cfg, projector=projector, adapter=_adapter(path, lora, options),
                            source={"system": "pandagpt", "file": str(path.absolute())})


def _hidden_size(llm: Path) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(llm)
    return int(getattr(config, "hidden_size"))
