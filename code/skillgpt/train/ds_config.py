"""DeepSpeed config: ZeRO settings come from `dsconfig/*.json`, batch/precision/clipping from our config."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from skillgpt.config.schema import Config


def use_bf16(precision: str) -> bool:
    """`auto` means bf16 where the hardware has it (a CUDA GPU with bf16), fp32 elsewhere."""
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def make_deepspeed_config(cfg: Config, world_size: int) -> dict[str, Any]:
    """Read `train.deepspeed_config` and fill the keys SkillGPT's config owns."""
    path = Path(cfg.train.deepspeed_config)
    if not path.is_file():
        raise FileNotFoundError(f"train.deepspeed_config: {path} not found")
    ds = json.loads(path.read_text())
    tc = cfg.train
    owned = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
             "gradient_clipping", "optimizer", "scheduler")
    clash = [k for k in owned if k in ds]
    if clash:
        raise ValueError(f"{path}: remove {clash}; they are set from the SkillGPT config (train.*)")
    ds.update(
        train_micro_batch_size_per_gpu=tc.micro_batch_size,
        gradient_accumulation_steps=tc.grad_accum,
        train_batch_size=tc.micro_batch_size * tc.grad_accum * world_size,
        gradient_clipping=tc.grad_clip,
        zero_allow_untested_optimizer=True,
        steps_per_print=10**9,
    )
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage not in (1, 2, 3):
        raise ValueError(f"{path}: zero_optimization.stage must be 1, 2 or 3 (got {stage}): SkillGPT relies on "
                         "ZeRO to gather whole weights for checkpoints and to discard steps with non-finite gradients")
    if stage == 3 and cfg.model.llm.quantization:
        raise ValueError(f"{path}: ZeRO-3 cannot partition an 8/4-bit LLM (model.llm.quantization="
                         f"{cfg.model.llm.quantization}); use a ZeRO-2 config such as dsconfig/stage_2.json")
    if stage == 3 and cfg.train.compile:
        raise ValueError(f"{path}: train.compile works with ZeRO-1/2 only (ZeRO-3 gathers each layer's weights in "
                         "hooks that torch.compile cannot trace); use a ZeRO-2 config or train.compile=false")
    # with bf16, ZeRO checks gradients for inf/NaN only when asked to
    ds["bf16"] = {"enabled": use_bf16(tc.precision), "check_grad_overflow": True}
    return ds


def derive_grad_accum(tc, world_size: int) -> int:
    """`train.global_batch_size` = micro_batch_size x grad_accum x processes: the accumulation steps it
    implies for this many processes (so the global batch, and what is learned, does not change with the
    number of GPUs). Without a global batch size, `train.grad_accum` as configured."""
    if not tc.global_batch_size:
        return tc.grad_accum
    per_step = tc.micro_batch_size * world_size
    if tc.global_batch_size % per_step:
        raise ValueError(
            f"train.global_batch_size {tc.global_batch_size} is not a multiple of micro_batch_size "
            f"{tc.micro_batch_size} x {world_size} processes; change one of them")
    return tc.global_batch_size // per_step


def offloads_optimizer(ds: dict[str, Any]) -> bool:
    """True when the DeepSpeed config keeps the optimizer state on the CPU (or NVMe)."""
    device = ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    return device in ("cpu", "nvme")


def make_optimizer(params: list[torch.nn.Parameter], tc, ds: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW: torch's fused kernel (one kernel for all parameters; on the CPU ~20x faster than the default
    per-tensor loop for a 1 M-parameter tensor) where every parameter's device has it. With the optimizer
    offloaded, DeepSpeed's CPU Adam in AdamW mode (same update rule, vectorised on the CPU; its C++ op is
    compiled on first use and cached)."""
    if offloads_optimizer(ds):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, lr=tc.lr, weight_decay=tc.weight_decay, adamw_mode=True)
    return torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay, fused=fused_adamw_available(params))


def fused_adamw_available(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch has a fused AdamW kernel for every parameter (floating point, on a supported device)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = _get_fused_kernels_supported_devices()
    return bool(params) and all(p.is_floating_point() and p.device.type in devices for p in params)
