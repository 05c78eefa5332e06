"""Trained weights and optimizer state, gathered whole from however ZeRO split them (no pickle).

`gather_trainable` returns every trainable parameter as one full fp32 tensor (the optimizer's master
copy), whatever the ZeRO stage and the number of processes; the delta checkpoint is written from it, so
a ZeRO-3 run saves exactly what a single-process run saves.

`optimizer.safetensors` holds, per trainable parameter name, its fp32 master and Adam's two moments;
`optimizer.json` the optimizer step, the LR scheduler and DeepSpeed's counters. Nothing in it depends on
how many processes wrote it, so a run resumes on any number of processes and any ZeRO stage.
All functions here are collective: every rank calls them. They need ZeRO stage 1-3 (stage 0 is refused by
skillgpt.train.ds_config), where every trainable parameter carries DeepSpeed's fragment mapping.
"""
from __future__ import annotations

import json
from pathlib import Path

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state, safe_set_full_fp32_param
from deepspeed.utils import safe_set_full_optimizer_state
from safetensors.torch import load_file, save_file
from torch import nn

MOMENTS = ("exp_avg", "exp_avg_sq")
TENSORS_FILE = "optimizer.safetensors"
STATE_FILE = "optimizer.json"


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _shape(param: nn.Parameter) -> torch.Size:
    return param.ds_shape if hasattr(param, "ds_shape") else param.shape  # ZeRO-3 keeps the full shape aside


def _full(param: nn.Parameter, key: str | None = None) -> torch.Tensor:
    """A parameter's whole fp32 master value (`key` None) or one of its optimizer states, on the CPU."""
    value = safe_get_full_fp32_param(param) if key is None else safe_get_full_optimizer_state(param, key)
    return value.float().cpu().reshape(_shape(param))


def gather_trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    """{parameter name: full fp32 tensor} for every trainable parameter (collective under ZeRO)."""
    return {name: _full(p) for name, p in trainable_parameters(model)}


def _base_optimizer(engine) -> torch.optim.Optimizer:
    """The torch optimizer that holds the state (inside ZeRO's wrapper)."""
    opt = engine.optimizer
    return getattr(opt, "optimizer", opt)


def _optimizer_step(base: torch.optim.Optimizer) -> int:
    steps = [int(s["step"]) for s in base.state.values() if "step" in s]
    return max(steps, default=0)


def save_optimizer_state(engine, model: nn.Module, weights: dict[str, torch.Tensor], folder: Path,
                         write: bool) -> None:
    """Write optimizer.safetensors / optimizer.json into `folder` (only where `write`, usually rank 0);
    `weights` are the fp32 masters `gather_trainable` already gathered for the delta checkpoint."""
    base = _base_optimizer(engine)
    step = _optimizer_step(base)
    tensors: dict[str, torch.Tensor] = {}
    for name, p in trainable_parameters(model):
        tensors[f"{name}:fp32"] = weights[name]
        for key in MOMENTS:  # before the first step the optimizer holds no state: moments are zero
            tensors[f"{name}:{key}"] = _full(p, key) if step > 0 else torch.zeros(_shape(p))
    if not write:
        return
    save_file(tensors, str(folder / TENSORS_FILE))
    scheduler = engine.lr_scheduler.state_dict() if engine.lr_scheduler is not None else None
    (folder / STATE_FILE).write_text(json.dumps({
        "step": step,
        "lr": [g["lr"] for g in base.param_groups],
        "scheduler": scheduler,
        "engine": {"global_steps": engine.global_steps, "global_samples": engine.global_samples,
                   "skipped_steps": engine.skipped_steps},
    }, indent=2, default=lambda o: None))


def _initialise_state(engine, base: torch.optim.Optimizer, step: int) -> None:
    """Create Adam's state (zeros, `step`) for the optimizer's own parameters, as its first step would."""
    zero = engine.optimizer  # the state belongs to its flat fp32 partitions (ZeRO-3 / ZeRO-1,2 names)
    for p in getattr(zero, "fp32_partitioned_groups_flat", None) or zero.single_partition_of_fp32_groups:
        if isinstance(base, torch.optim.AdamW):  # a tensor; the fused kernel wants it beside the parameter
            count = torch.tensor(float(step), device=p.device if base.defaults.get("fused") else "cpu")
        else:  # DeepSpeed CPU Adam: an int
            count = step
        base.state[p] = {"step": count, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    link = getattr(zero, "_lazy_init_hp_params_optimizer_state", None)
    if link is not None:  # ZeRO-1/2: point each parameter's fragment at the new state
        link()


def _set_full(p: nn.Parameter, value: torch.Tensor, key: str | None) -> None:
    """Set a parameter's fp32 master (`key` None) or one optimizer state from its full value."""
    if hasattr(p, "ds_id"):
        # ZeRO-3. DeepSpeed's own setter (0.19.8) reads past the end of a parameter whose last partition is
        # padded (e.g. 3 elements over 2 ranks), so this rank's slice is cut here and the padding left alone.
        z3 = p._z3_optimizer
        part, _ = z3._get_fp32_opt_state_partition(p, release_swap_buffers=False, optim_state_key=key)
        start = part.numel() * z3._get_param_partition_rank(p)
        chunk = value.flatten()[start : start + part.numel()]
        part.data[: chunk.numel()].copy_(chunk)
    elif key is None:
        safe_set_full_fp32_param(p, value)
    else:
        safe_set_full_optimizer_state(p, value, key)


def _set_weight(p: nn.Parameter, value: torch.Tensor) -> None:
    """Set a parameter's fp32 master and the (possibly lower-precision, possibly partitioned) weight."""
    _set_full(p, value, None)
    with torch.no_grad():
        if hasattr(p, "ds_id"):  # ZeRO-3: gather, modify on rank 0, re-partition
            with deepspeed.zero.GatheredParameters([p], modifier_rank=0):
                if dist.get_rank() == 0:
                    p.copy_(value.to(p.dtype))
        else:
            p.copy_(value.to(p.dtype))


def load_optimizer_state(engine, model: nn.Module, folder: Path) -> None:
    """Scatter a saved optimizer state into this engine (any ZeRO stage, any number of processes)."""
    tensors_path, state_path = folder / TENSORS_FILE, folder / STATE_FILE
    if not tensors_path.is_file() or not state_path.is_file():
        raise FileNotFoundError(f"{folder}: no {TENSORS_FILE}/{STATE_FILE}: not a resumable checkpoint")
    saved = json.loads(state_path.read_text())
    tensors = load_file(str(tensors_path))
    params = trainable_parameters(model)
    missing = [n for n, _ in params if f"{n}:fp32" not in tensors]
    extra = sorted({k.rsplit(":", 1)[0] for k in tensors} - {n for n, _ in params})
    if missing or extra:
        raise ValueError(f"{tensors_path}: trainable parameters differ from the model's "
                         f"(missing {missing[:5]}, not in the model {extra[:5]}); was the freeze policy changed?")
    base = _base_optimizer(engine)
    if saved["step"] > 0:
        _initialise_state(engine, base, saved["step"])
    for name, p in params:
        fp32 = tensors[f"{name}:fp32"].to(engine.device)
        _set_weight(p, fp32)
        if saved["step"] == 0:
            continue
        for key in MOMENTS:
            _set_full(p, tensors[f"{name}:{key}"].to(engine.device), key)
    for group, lr in zip(base.param_groups, saved["lr"]):
        group["lr"] = lr
    if saved["scheduler"] is not None and engine.lr_scheduler is not None:
        engine.lr_scheduler.load_state_dict(saved["scheduler"])
    for key, value in saved["engine"].items():
        setattr(engine, key, value)
