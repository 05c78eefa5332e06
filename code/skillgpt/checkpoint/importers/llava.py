"""LLaVA-1.5 runs as SkillGPT checkpoints: a projector-only pretraining output (``mm_projector.bin``) or a
LoRA run (peft folder ``adapter_model.{safetensors,bin}`` + ``adapter_config.json`` and
``non_lora_trainables.bin``), each optionally beside LLaVA's ``config.json`` (``mm_*`` settings).

What LLaVA-1.5 does and the checkpoint reproduces: a CLIP vision tower (``model.encoder.name: hf_image``)
whose ``hidden_states[mm_vision_select_layer]`` (-2) are taken without the class token
(``mm_vision_select_feature: patch`` -> ``keep_cls: false``), one image = one frame, the ``linear`` or
``mlp2x_gelu`` projector, the base LLM (Vicuna v1.5) and the ``vicuna_v1`` template. Neither LLaVA file
holds the vision tower or the LLM: both are given as local folders (``--base-llm``, ``--encoder``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from skillgpt.checkpoint.importers.common import (
    Adapter, check_keys, check_options, load_state, make_config, require_base_llm, write_checkpoint,
)
from skillgpt.models.llm import DTYPES

PROJECTOR_KEYS = {"linear": ("weight", "bias"), "mlp2x_gelu": ("0.weight", "0.bias", "2.weight", "2.bias")}
PROJECTOR_PREFIX = "model.mm_projector."  # mm_projector.bin
NON_LORA_PREFIX = "base_model.model.model.mm_projector."  # non_lora_trainables.bin of a LoRA run
ADAPTER_PREFIX = "base_model.model.model.layers."  # LoRA on the LLM's decoder layers only
TOWER_PREFIX = "base_model.model.model.vision_tower."  # LoRA layers peft also put into the CLIP tower
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _llava_config(folder: Path) -> dict[str, Any]:
    """LLaVA's config.json beside the weights (its mm_* settings), or {} when absent."""
    path = folder / "config.json"
    cfg = read_json(path) if path.is_file() else {}
    supported = (("mm_use_im_start_end", (False, None)), ("mm_use_im_patch_token", (False, None)),
                 ("mm_patch_merge_type", ("flat", None)), ("mm_vision_select_feature", ("patch", "cls_patch", None)))
    for key, allowed in supported:
        if cfg.get(key) not in allowed:
            raise ValueError(f"{path}: {key}={cfg.get(key)!r} is not supported (expected one of "
                             f"{[a for a in allowed if a is not None]}; LLaVA-1.5 uses the first)")
    return cfg


def _projector(path: Path, state: dict[str, torch.Tensor], prefix: str,
               declared: str | None) -> tuple[str, dict[str, torch.Tensor]]:
    """(projector name, SkillGPT projector state) from LLaVA's mm_projector tensors under `prefix`."""
    inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    kind = declared or ("mlp2x_gelu" if "0.weight" in inner else "linear")
    if kind not in PROJECTOR_KEYS:
        raise ValueError(f"{path}: mm_projector_type {kind!r} is not supported (expected linear or mlp2x_gelu)")
    check_keys(path, state, [prefix + k for k in PROJECTOR_KEYS[kind]])
    return kind, {f"video.{k}": v.float() for k, v in inner.items()}


def _without_tower_lora(path: Path, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the LoRA layers peft put into the CLIP tower (its q/k/v_proj match the target names). LLaVA runs
    the tower under torch.no_grad, so they never train (lora_B stays zero); trained ones are refused."""
    tower = {k: v for k, v in weights.items() if k.startswith(TOWER_PREFIX)}
    trained = sorted(k for k, v in tower.items() if k.endswith("lora_B.weight") and bool(v.any()))
    if trained:
        raise ValueError(f"{path}: LoRA on the vision tower was trained ({trained[:4]}); SkillGPT keeps the "
                         "encoder frozen without LoRA, so these weights cannot be imported")
    return {k: v for k, v in weights.items() if k not in tower}


def read_adapter(folder: Path) -> Adapter:
    """The LoRA adapter of a LLaVA LoRA run, its settings from its own adapter_config.json."""
    cfg_path = folder / "adapter_config.json"
    cfg = read_json(cfg_path)
    for key, expected in (("peft_type", "LORA"), ("bias", "none"), ("use_rslora", False), ("use_dora", False),
                          ("modules_to_save", None)):
        if cfg.get(key, expected) not in (expected, [] if expected is None else expected):
            raise ValueError(f"{cfg_path}: {key}={cfg[key]!r} is not supported (expected {expected!r})")
    weights_path = next((folder / f for f in ADAPTER_FILES if (folder / f).is_file()), None)
    if weights_path is None:
        raise FileNotFoundError(f"{folder}: no {' or '.join(ADAPTER_FILES)} (the LoRA weights)")
    weights = _without_tower_lora(weights_path, load_state(weights_path))
    lora_keys = (".lora_A.weight", ".lora_B.weight")
    bad = sorted(k for k in weights if not (k.startswith(ADAPTER_PREFIX) and k.endswith(lora_keys)))
    if bad:
        raise ValueError(f"{weights_path}: unknown keys {bad[:8]} "
                         f"(expected {ADAPTER_PREFIX}N.<module>.lora_{{A,B}}.weight)")
    targets = cfg.get("target_modules")
    if isinstance(targets, str) or not targets:
        raise ValueError(f"{cfg_path}: target_modules must be a list of module names, got {targets!r}")
    found = {k.rsplit(".", 2)[0].rsplit(".", 1)[-1] for k in weights}
    if not found <= set(targets):
        raise ValueError(f"{weights_path}: LoRA weights on {sorted(found - set(targets))}, which "
                         f"{cfg_path} target_modules {sorted(targets)} does not name")
    return Adapter(weights=weights, r=int(cfg["r"]), alpha=float(cfg["lora_alpha"]),
                   dropout=float(cfg.get("lora_dropout", 0.0)), target_modules=sorted(targets))


def _vision_tower(llava_cfg: dict[str, Any], given: str | Path | None, src: Path) -> Path:
    """The local CLIP folder: `vision_tower` when given, else config.json's mm_vision_tower if it is a folder."""
    named = llava_cfg.get("mm_vision_tower") or llava_cfg.get("vision_tower")
    folder = Path(given).expanduser() if given else (Path(named).expanduser() if named else None)
    if folder is None or not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{src}: the vision tower ({named or 'a CLIP ViT-L/14-336'}) is needed as a local Hugging Face "
            f"folder: pass it with --encoder DIR (option encoder= or vision_tower=); {folder or 'none given'} "
            "has no config.json")
    return folder.absolute()


def default_dtype(base_llm: Path) -> str:
    """The base LLM's stored dtype when SkillGPT knows it (Vicuna: float16), else float32."""
    cfg = read_json(base_llm / "config.json")
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return dtype if dtype in DTYPES else "float32"


def _check_widths(src: Path, projector: dict[str, torch.Tensor], tower: Path, base_llm: Path) -> None:
    first = projector.get("video.0.weight", projector.get("video.weight"))
    last = projector.get("video.2.weight", projector.get("video.weight"))
    tower_cfg = read_json(tower / "config.json")
    tower_width = tower_cfg.get("vision_config", tower_cfg).get("hidden_size")
    llm_width = read_json(base_llm / "config.json").get("hidden_size")
    if first.shape[1] != tower_width or last.shape[0] != llm_width:
        raise ValueError(f"{src}: the projector maps {first.shape[1]} -> {last.shape[0]}, but the vision tower "
                         f"{tower} is {tower_width} wide and the base LLM {base_llm} {llm_width}")


def import_llava(src: Path, out: Path, base_llm: Path | None, vision_tower: str | Path | None = None,
                 dtype: str | None = None, settings: dict[str, Any] | None = None, **options: Any) -> Path:
    """Import a LLaVA-1.5 projector (file or folder with mm_projector.bin) or LoRA run folder into run `out`.
    Options: vision_tower (the CLIP folder; ``encoder`` is accepted for it), dtype (of the LLM and the
    tower; default: the base LLM's), settings (config overrides)."""
    vision_tower = vision_tower or options.pop("encoder", None)
    check_options("llava", options, "vision_tower, encoder, dtype, settings")
    base_llm = require_base_llm(base_llm, "LLaVA", "Vicuna v1.5")
    folder = src if src.is_dir() else src.parent
    llava_cfg = _llava_config(folder)
    declared = llava_cfg.get("mm_projector_type")
    adapter = None
    if src.is_dir() and any((src / f).is_file() for f in ADAPTER_FILES):
        path = src / "non_lora_trainables.bin"
        kind, projector = _projector(path, load_state(path), NON_LORA_PREFIX, declared)
        adapter = read_adapter(src)
    else:
        path = src / "mm_projector.bin" if src.is_dir() else src
        if not path.is_file():
            raise FileNotFoundError(f"{src}: neither mm_projector.bin (projector only) nor {ADAPTER_FILES[0]} "
                                    "(LoRA run)")
        kind, projector = _projector(path, load_state(path), PROJECTOR_PREFIX, declared)
    tower = _vision_tower(llava_cfg, vision_tower, src)
    base = base_llm.absolute()
    _check_widths(path, projector, tower, base)
    tower_cfg = read_json(tower / "config.json")
    size = int(tower_cfg.get("vision_config", tower_cfg).get("image_size", 336))
    llm_dtype = dtype or default_dtype(base)
    if llm_dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {llm_dtype!r}")
    layer = {
        "preset": "llava-1.5", "run_name": out.name, "stage": 2,
        "model.encoder": {"name": "hf_image", "path": str(tower), "output": "clip_tokens", "pool": 1,
                          "select_layer": int(llava_cfg.get("mm_vision_select_layer", -2)),
                          "keep_cls": llava_cfg.get("mm_vision_select_feature", "patch") == "cls_patch",
                          "dtype": llm_dtype},
        "model.projector.name": kind,
        "model.llm": {"path": str(base), "template": "vicuna_v1", "dtype": llm_dtype,
                      "max_length": int(llava_cfg.get("tokenizer_model_max_length") or 2048)},
        "data.video": {"num_clips": 1, "frames_per_clip": 1, "num_crops": 1, "resolution": size},
    }
    cfg = make_config(layer, out, settings or {})
    source = {"system": "llava", "src": str(src.absolute()), "weights": str(path.absolute()), "projector": kind,
              "lora": adapter is not None, "vision_tower": str(tower), "base_llm": str(base),
              "image_aspect_ratio": llava_cfg.get("image_aspect_ratio")}
    return write_checkpoint(out, cfg, projector=projector, adapter=adapter, source=source)
