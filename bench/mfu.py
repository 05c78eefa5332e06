"""Model-FLOPs utilisation of SkillGPT's stage-2 LoRA train step (forward + backward + AdamW).

    python bench/mfu.py [--shape cpu-small|qwen2.5-1.5b] [--steps 10] [--warmup 3] [--peak-tflops X]

The model, batch and step are bench/train_step.py's (frozen ImageBind-shaped encoder, trainable projector,
LoRA r 16 on q/k/v/o of a Qwen2-architecture LLM, only the answer tokens supervised). FLOPs counted are
the ones the step needs, from one step run under `torch.utils.flop_counter.FlopCounterMode`, which sees
every matrix product actually executed: the frozen base gets no weight gradients (autograd skips them),
the LM head runs at supervised positions only, the encoder runs forward only. Attention is counted apart,
from each `scaled_dot_product_attention` call: 4 x head_dim FLOPs per query-key pair the mask allows
(causal: about half), x3 when the call needs a backward (dQ, dK, dV). The optimizer step is not counted
(element-wise, a few FLOPs per trainable parameter). MFU = needed FLOPs / median step time / the device's
dense bf16 peak (datasheet table below or --peak-tflops; on a CPU only the achieved rate is printed).
Appends a dated table to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from train_step import SHAPES, build, make_batch, step

REPO = Path(__file__).resolve().parents[1]
# dense (no sparsity) bf16 tensor-core peaks from NVIDIA's datasheets, TFLOP/s, by torch.cuda.get_device_name()
PEAK_BF16_TFLOPS = {"NVIDIA H100 80GB HBM3": 989.4, "NVIDIA H100 PCIe": 756.0, "NVIDIA H200": 989.4,
                    "NVIDIA A100-SXM4-80GB": 312.0, "NVIDIA A100-SXM4-40GB": 312.0, "NVIDIA A100 80GB PCIe": 312.0}


def allowed_pairs(q: torch.Tensor, k: torch.Tensor, attn_mask, is_causal: bool) -> float:
    """Query-key pairs attention must compute, summed over batch and heads."""
    b, h, sq, sk = q.shape[0], q.shape[1], q.shape[-2], k.shape[-2]
    if attn_mask is not None:
        allowed = attn_mask if attn_mask.dtype == torch.bool else attn_mask > torch.finfo(attn_mask.dtype).min / 2
        return float(allowed.expand(b, h, sq, sk).sum())
    if is_causal:  # query i sees keys 0..i (top-left aligned, as torch defines it)
        return float(b * h * sum(min(i + 1, sk) for i in range(sq)))
    return float(b * h * sq * sk)


@contextmanager
def attention_flops(record: list[float]):
    """Wrap F.scaled_dot_product_attention to add each call's needed FLOPs to `record`."""
    real = F.scaled_dot_product_attention

    def counting(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
        record.append(4 * q.shape[-1] * allowed_pairs(q, k, attn_mask, is_causal) * (3 if grad else 1))
        return real(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kw)

    F.scaled_dot_product_attention = counting
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real


def needed_flops(model: torch.nn.Module, batch: dict) -> dict[str, float]:
    """FLOPs of one forward + backward: matrix products as executed, attention as the masks need it."""
    attention: list[float] = []
    with attention_flops(attention), FlopCounterMode(display=False) as counter:
        model(**batch).backward()
    model.zero_grad(set_to_none=True)
    ops = counter.get_flop_counts()["Global"]
    matmul = sum(v for op, v in ops.items() if "scaled_dot_product" not in str(op))
    return {"matmul": float(matmul), "attention": sum(attention), "total": float(matmul) + sum(attention)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="cpu-small")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device peak (default: datasheet table, GPUs)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{os.cpu_count()}-core CPU"
    peak = args.peak_tflops or PEAK_BF16_TFLOPS.get(name, 0.0)
    shape = SHAPES[args.shape]
    model, opt = build("skillgpt", shape, device, dtype)
    batch = make_batch(shape, device, dtype)["skillgpt"]
    flops = needed_flops(model, batch)
    times = [step("skillgpt", model, opt, batch) for _ in range(args.warmup + args.steps)][args.warmup:]
    t = statistics.median(times)
    achieved = flops["total"] / t / 1e12
    tokens = batch["input_ids"].numel()
    mfu = f"**{100 * achieved / peak:.1f}%** of {peak:.0f}" if peak else "n/a (no peak known; --peak-tflops)"
    lines = [f"## MFU: stage-2 LoRA train step ({datetime.date.today()}, {name}, {dtype})", "",
             f"Command: `python bench/mfu.py --shape {args.shape}`. Batch {shape['batch']} x "
             f"{batch['input_ids'].shape[1]} tokens; median of {args.steps} steps after {args.warmup}.", "",
             "| shape | needed GFLOP per step (matmul + attention) | GFLOP per token | median step (s) | "
             "achieved TFLOP/s | MFU (bf16 peak, TFLOP/s) |", "| --- | ---: | ---: | ---: | ---: | --- |",
             f"| {args.shape} | {flops['total'] / 1e9:,.1f} ({flops['matmul'] / 1e9:,.1f} + "
             f"{flops['attention'] / 1e9:,.1f}) | {flops['total'] / tokens / 1e9:.3f} | {t:.3f} | {achieved:.3f} | {mfu} |", ""]
    text = "\n".join(lines)
    print(text)
    with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
        f.write("\n" + text)


if __name__ == "__main__":
    main()
