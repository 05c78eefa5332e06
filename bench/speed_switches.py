"""Speed switches, each against its own default in the same run: the fused AdamW kernel and `train.compile`.

    python bench/speed_switches.py [--steps 20] [--compile-steps 10] [--backend inductor]

1. Optimizer step: torch AdamW with its default implementation (a per-tensor loop on the CPU, foreach on
   CUDA) vs `fused=True` (what `make_optimizer` picks where torch has the kernel), on the exact trainable
   parameters (projector + LoRA) of the real stage-2 presets, shapes taken from a meta-device build.
   Random gradients; median over --steps steps, the two optimizers interleaved.
2. `train.compile`: SkillGPT's stage-2 train step at bench/train_step.py's CPU shape, eager vs
   `compile_blocks` (each decoder layer and the encoder compiled with --backend). Same optimizer on both;
   first-step time (includes compiling) and median of --compile-steps steps after 2 warm-up steps,
   interleaved. Prints markdown tables and appends them to bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from pathlib import Path

import torch

from memory_estimate import LLM_CONFIGS, meta_model
from train_step import SHAPES, build_skillgpt, make_batch, step

REPO = Path(__file__).resolve().parents[1]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def optimizer_rows(steps: int, device: torch.device) -> list[str]:
    rows = []
    for preset in LLM_CONFIGS:
        shapes = [p.shape for p in meta_model(preset).parameters() if p.requires_grad]
        g = torch.Generator().manual_seed(0)
        opts = {}
        for fused in (False, True):
            params = [torch.nn.Parameter(torch.randn(s, generator=g).to(device)) for s in shapes]
            for p in params:
                p.grad = torch.randn(p.shape, generator=g).to(device)
            opts[fused] = torch.optim.AdamW(params, lr=1e-4, fused=fused)
            opts[fused].step()  # creates the state
        times = {False: [], True: []}
        for i in range(steps):
            for fused in ((False, True) if i % 2 == 0 else (True, False)):
                _sync()
                tic = time.perf_counter()
                opts[fused].step()
                _sync()
                times[fused].append(time.perf_counter() - tic)
        plain, fused = statistics.median(times[False]), statistics.median(times[True])
        n = sum(s.numel() for s in shapes)
        rows.append(f"| {preset} | {len(shapes)} tensors, {n / 1e6:.1f} M | {plain * 1e3:.1f} | {fused * 1e3:.1f} | "
                    f"**{fused / plain:.2f}x** |")
    return rows


def compile_row(steps: int, backend: str, device: torch.device) -> str:
    from skillgpt.models.compile import compile_blocks

    shape = SHAPES["cpu-small"]
    models = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        model = build_skillgpt(shape, torch.float32).to(device).train()
        if compiled:
            compile_blocks(model, backend)
        models[compiled] = (model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4))
    batch = make_batch(shape, device, torch.float32)["skillgpt"]
    first = {c: step("skillgpt", *models[c], batch) for c in (False, True)}
    times = {False: [], True: []}
    for i in range(2 + steps):
        for c in ((False, True) if i % 2 == 0 else (True, False)):
            t = step("skillgpt", *models[c], batch)
            if i >= 2:
                times[c].append(t)
    eager, comp = statistics.median(times[False]), statistics.median(times[True])
    return (f"| cpu-small (bench/train_step.py) | {backend} | {first[False]:.2f} | {first[True]:.1f} | {eager:.3f} | "
            f"{comp:.3f} | **{comp / eager:.2f}x** |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per implementation")
    ap.add_argument("--compile-steps", type=int, default=10, help="timed train steps per model")
    ap.add_argument("--backend", default="inductor")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = torch.cuda.get_device_name(0) if device.type == "cuda" else f"{os.cpu_count()}-core CPU"
    load = os.getloadavg()[0]
    opt = optimizer_rows(args.steps, device)
    comp = compile_row(args.compile_steps, args.backend, device)
    lines = [
        f"## Speed switches: fused AdamW and train.compile ({datetime.date.today()}, {where}, "
        f"{torch.get_num_threads()} torch threads, 1-min load {load:.1f} -> {os.getloadavg()[0]:.1f})", "",
        f"Command: `python bench/speed_switches.py --steps {args.steps} --compile-steps {args.compile_steps} "
        f"--backend {args.backend}`.", "",
        "| trainable parameters of preset (stage 2) | size | AdamW default step (ms) | fused step (ms) | fused / default |",
        "| --- | --- | ---: | ---: | ---: |", *opt, "",
        "| shape | backend | eager first step (s) | compiled first step (s) | eager step (s) | compiled step (s) | compiled / eager |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |", comp, "",
    ]
    text = "\n".join(lines)
    print(text)
    with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
        f.write("\n" + text)


if __name__ == "__main__":
    main()
