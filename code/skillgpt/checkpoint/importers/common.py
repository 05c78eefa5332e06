"""What every importer shares: reading original files safely, checking their keys, and writing a complete
SkillGPT checkpoint (config.yaml, projector.safetensors, adapter/, base-llm/, generation.safetensors,
MANIFEST.json, COMPLETE).

The run folder written is ``out/checkpoint-0``; a checkpoint is only marked COMPLETE once every file and
the manifest are in place, so a failed import never leaves something that loads.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from skillgpt.checkpoint.delta import CHECKPOINT_PREFIX, COMPLETE
from skillgpt.checkpoint.manifest import write_manifest
from skillgpt.config import Config, load_resolved, save_config

IMPORT_STEP = 0
BASE_LLM = "base-llm"  # an imported checkpoint's own base LLM folder (not a trained part: see write_checkpoint)


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file or a ``torch.save``d dict (read with ``weights_only=True``: no
    pickled code runs). Nested dicts are flattened with dots; non-tensor values are dropped."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors name the class that would have to run
        raise ValueError(f"{path}: not a plain tensor checkpoint readable without running pickled code ({err})") from err
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a dict of tensors, found {type(raw).__name__}")
    return flatten_tensors(raw)


def check_options(system: str, options: Mapping[str, Any], known: str) -> None:
    """Refuse importer options it does not take, naming the ones it does."""
    if options:
        raise ValueError(f"--from {system}: unknown options {sorted(options)} (known: {known})")


def require_base_llm(base_llm: Path | None, system: str, trained_on: str) -> Path:
    """The base LLM folder a delta-only release needs (FileNotFoundError naming --base-llm otherwise)."""
    if base_llm is None or not (base_llm / "config.json").is_file():
        raise FileNotFoundError(f"--base-llm: {system} keeps only its trained parts; give the base LLM folder "
                                f"({trained_on}) it was trained on ({base_llm or 'none given'} has no config.json)")
    return base_llm


def flatten_tensors(tree: Mapping[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, Mapping):
            out.update(flatten_tensors(value, name + "."))
    return out


def check_keys(path: Path, found: Iterable[str], expected: Iterable[str], optional: Iterable[str] = ()) -> None:
    """Raise naming the unknown and the missing keys of `path` (both lists, first 8 each)."""
    found, expected, optional = set(found), set(expected), set(optional)
    unknown = sorted(found - expected - optional)
    missing = sorted(expected - found)
    if unknown or missing:
        parts = ([f"unknown keys {unknown[:8]}" + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")] if unknown else [])
        parts += [f"missing keys {missing[:8]}" + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")] if missing else []
        raise ValueError(f"{path}: does not have the expected layout: {'; '.join(parts)}")


def make_config(settings: Mapping[str, Any], out: Path, *more: Mapping[str, Any]) -> Config:
    """A resolved Config: the schema defaults, then `settings` and each of `more` in turn (nested dicts as
    in a YAML file; dotted keys allowed; later layers merge into earlier ones), with data.train unset and
    train.output_dir = `out`."""
    tree = OmegaConf.create({"data": {"train": None}, "train": {"output_dir": str(Path(out).absolute())}})
    for layer in (settings, *more):
        for key, value in layer.items():
            OmegaConf.update(tree, key, value, merge=True, force_add=True)
    tmp = Path(out) / ".import-config.yaml"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(OmegaConf.to_yaml(tree))
    try:
        return load_resolved(tmp)  # strict: every key checked against the schema, choices validated
    finally:
        tmp.unlink()


@dataclass
class Adapter:
    """A LoRA adapter in peft's saved layout: keys ``base_model.model.<module path>.lora_{A,B}.weight``
    (no adapter name) and its settings."""

    weights: dict[str, torch.Tensor]
    r: int
    alpha: float
    dropout: float
    target_modules: list[str]
    extra: dict[str, Any] = field(default_factory=dict)  # other LoraConfig fields (e.g. modules_to_save)


def write_adapter(folder: Path, adapter: Adapter, base_llm: str) -> None:
    """A standard peft adapter folder (adapter_config.json + adapter_model.safetensors)."""
    from peft import LoraConfig

    folder.mkdir(parents=True, exist_ok=True)
    alpha = int(adapter.alpha) if float(adapter.alpha).is_integer() else adapter.alpha
    config = LoraConfig(r=adapter.r, lora_alpha=alpha, lora_dropout=adapter.dropout,
                        target_modules=list(adapter.target_modules), task_type="CAUSAL_LM",
                        base_model_name_or_path=base_llm, **adapter.extra)
    config.save_pretrained(str(folder))
    save_file({k: v.detach().float().contiguous() for k, v in adapter.weights.items()},
              str(folder / "adapter_model.safetensors"))


def write_checkpoint(out: Path, cfg: Config, projector: Mapping[str, torch.Tensor] | None = None,
                     adapter: Adapter | None = None, llm: Path | None = None,
                     source: Mapping[str, Any] | None = None,
                     generation: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a complete SkillGPT checkpoint into run folder `out` (``out/checkpoint-0``) and return `out`.

    `projector`: state dict of ``model.projector`` (branch-prefixed, e.g. ``video.weight``); `adapter`:
    LoRA weights and settings (config.yaml's model.llm.lora is set to the same values); `llm`: a Hugging
    Face model folder copied to ``base-llm/`` and used as model.llm.path (e.g. the base LLM with the
    vocabulary the original extended; a later stage points its model.llm.path there too);
    `source`: what was imported (written to ``import.json``); `generation`: state dict of ``model.generation``
    (signal-token row deltas and output projectors, written to ``generation.safetensors``; config.yaml's
    model.generation must describe it). The freeze policy records which parts exist, so a later stage
    starting from it (train.init_from) loads them."""
    out = Path(out)
    final = out / f"{CHECKPOINT_PREFIX}{IMPORT_STEP}"
    tmp = out / f".tmp-{final.name}"
    if (final / COMPLETE).exists():
        raise FileExistsError(f"{final}: already holds a checkpoint; choose another --out or remove it")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cfg.freeze.projector = "full" if projector is not None else "frozen"
    cfg.freeze.llm = "lora" if adapter is not None else "frozen"
    cfg.freeze.generation = "full" if generation is not None else "frozen"
    cfg.train.output_dir = str(out.absolute())
    if adapter is not None:
        lora = cfg.model.llm.lora
        lora.r, lora.dropout = adapter.r, adapter.dropout
        lora.alpha = int(adapter.alpha) if float(adapter.alpha).is_integer() else adapter.alpha
        lora.target_modules = list(adapter.target_modules)
    try:
        if projector is not None:
            save_file({k: v.detach().float().contiguous() for k, v in projector.items()}, str(tmp / "projector.safetensors"))
        if generation is not None:
            save_file({k: v.detach().float().contiguous() for k, v in generation.items()},
                      str(tmp / "generation.safetensors"))
        if llm is not None:
            shutil.copytree(llm, tmp / BASE_LLM)
            cfg.model.llm.path = str((final / BASE_LLM).absolute())
        if adapter is not None:
            write_adapter(tmp / "adapter", adapter, cfg.model.llm.path)
        save_config(cfg, tmp / "config.yaml")
        if source:
            (tmp / "import.json").write_text(json.dumps(dict(source), indent=2, default=str))
        write_manifest(tmp)
        (tmp / COMPLETE).write_text("ok\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return out
