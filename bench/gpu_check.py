"""GPU checks that CPU tests cannot make, one figure each (run them all with `bash bench/gpu_check.sh`).

    python bench/gpu_check.py CHECK [--shape qwen2.5-1.5b|cpu-small] [--steps 5]

CHECK:
  env      what the machine has: torch, the GPU, bf16, flash-attn, bitsandbytes, deepspeed
  nccl     the training loop's bookkeeping collectives (token count, stop/save agreement) on a real
           NCCL process group, fed CPU tensors as the loop does; a raw CPU all_reduce is shown to fail
  train    stage-2 LoRA steps in bf16 at the shape (SkillGPT vs transformers' Llava of equal size,
           bench/train_step.py's models): median step time, peak memory, ratio
  flash    which attention `model.llm.attn_implementation: auto` picks, and (when it is FlashAttention 2)
           the loss agrees with SDPA's
  qlora    8-bit and 4-bit base LLM (bitsandbytes, through skillgpt's own `load_llm` / `add_lora`) at the
           shape's LLM width with fewer layers: LoRA step time and peak memory
  compile  `train.compile` (skillgpt.models.compile.compile_blocks) vs eager: step time and equal loss

Each check prints lines starting with "RESULT" that bench/gpu_check.sh collects. `--shape cpu-small`
runs the same code on a CPU (a smoke test of this script; no figure from it means anything).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import SHAPES, build, make_batch, qwen2_config, step  # noqa: E402


def result(check: str, **figures) -> None:
    print(f"RESULT {check}: " + ", ".join(f"{k}={v}" for k, v in figures.items()), flush=True)


def device_and_dtype() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def peak_mib(device: torch.device) -> float:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda" else float("nan")


def check_env(_: argparse.Namespace) -> None:
    have = {name: importlib.util.find_spec(name) is not None for name in ("flash_attn", "bitsandbytes", "deepspeed")}
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    result("env", torch=torch.__version__, gpu=repr(gpu), bf16=bf16, **have)


def check_nccl(_: argparse.Namespace) -> None:
    """One-process NCCL group (one GPU): the loop's collectives must accept the CPU tensors they are given."""
    import torch.distributed as dist

    from skillgpt.distributed import agree, all_reduce_sum

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if torch.cuda.is_available():
        torch.cuda.set_device(0)
    dist.init_process_group(backend, rank=0, world_size=1)
    try:
        try:
            dist.all_reduce(torch.ones(1))
            raw = "accepted"
        except (RuntimeError, ValueError) as err:
            raw = f"refused ({str(err).splitlines()[0][:80]})"
        total = all_reduce_sum(torch.tensor(7.0))
        stop = agree(True)
        result("nccl", backend=backend, raw_cpu_all_reduce=repr(raw), token_count=float(total), stop_agreed=stop,
               ok=float(total) == 7.0 and stop is True)
    finally:
        dist.destroy_process_group()


def timed_steps(name: str, model, opt, batch: dict, warmup: int, steps: int) -> float:
    times = [step(name, model, opt, batch) for _ in range(warmup + steps)][warmup:]
    return statistics.median(times)


def check_train(args: argparse.Namespace) -> None:
    device, dtype = device_and_dtype()
    shape = SHAPES[args.shape]
    figures = {}
    for name in ("skillgpt", "llava"):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        model, opt = build(name, shape, device, dtype)
        batch = make_batch(shape, device, dtype)[name]
        t = timed_steps(name, model, opt, batch, 2, args.steps)
        figures[name] = (t, peak_mib(device), batch["input_ids"].numel())
        del model, opt, batch
    (ts, ms, tokens), (tl, ml, _) = figures["skillgpt"], figures["llava"]
    result("train", shape=args.shape, dtype=str(dtype), skillgpt_step_s=round(ts, 4), llava_step_s=round(tl, 4),
           step_ratio=round(ts / tl, 3), skillgpt_peak_mib=ms, llava_peak_mib=ml,
           skillgpt_tokens_per_s=round(tokens / ts, 1))


def check_flash(args: argparse.Namespace) -> None:
    from skillgpt.config.schema import LLMConfig
    from skillgpt.models.llm import attention_implementation

    device, dtype = device_and_dtype()
    chosen = attention_implementation(LLMConfig(path="unused", dtype="bfloat16", attn_implementation="auto"))
    figures = {"auto_picks": chosen}
    if chosen == "flash_attention_2":
        from transformers import AutoModelForCausalLM

        shape = SHAPES[args.shape]
        cfg = qwen2_config(shape)
        cfg.num_hidden_layers = 2
        torch.manual_seed(0)
        ids = torch.randint(1000, 100_000, (2, 512), device=device)
        losses = {}
        for impl in ("sdpa", "flash_attention_2"):
            torch.manual_seed(0)
            lm = AutoModelForCausalLM.from_config(cfg, attn_implementation=impl, dtype=dtype).to(device)
            with torch.no_grad():
                losses[impl] = float(lm(input_ids=ids, labels=ids, use_cache=False).loss)
            del lm
        figures.update(sdpa_loss=round(losses["sdpa"], 5), flash_loss=round(losses["flash_attention_2"], 5),
                       agree=abs(losses["sdpa"] - losses["flash_attention_2"]) < 2e-2)
    result("flash", **figures)


def check_qlora(args: argparse.Namespace) -> None:
    from transformers import AutoModelForCausalLM

    from skillgpt.config.schema import LLMConfig, LoraConfig
    from skillgpt.models.llm import add_lora, load_llm

    if not torch.cuda.is_available():
        result("qlora", skipped="no CUDA GPU (bitsandbytes kernels)")
        return
    device, dtype = device_and_dtype()
    cfg = qwen2_config(SHAPES[args.shape])
    cfg.num_hidden_layers = 8  # the 1.5B shape's width, fewer layers: the quantized kernels are what is timed
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(cfg, dtype=dtype).save_pretrained(folder)
        ids = torch.randint(1000, 100_000, (4, 512), device=device)
        for bits in ("8bit", "4bit"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            llm = add_lora(load_llm(LLMConfig(path=folder, dtype="bfloat16", quantization=bits)),
                           LoraConfig(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
            opt = torch.optim.AdamW([p for p in llm.parameters() if p.requires_grad], lr=1e-4)
            times, losses = [], []
            for _ in range(2 + args.steps):
                torch.cuda.synchronize()
                tic = time.perf_counter()
                loss = llm(input_ids=ids, labels=ids, use_cache=False).loss
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - tic)
                losses.append(float(loss))
            result("qlora", bits=bits, layers=cfg.num_hidden_layers, step_s=round(statistics.median(times[2:]), 4),
                   peak_mib=peak_mib(device), first_loss=round(losses[0], 4), last_loss=round(losses[-1], 4))
            del llm, opt


def check_compile(args: argparse.Namespace) -> None:
    from skillgpt.models.compile import compile_blocks

    device, dtype = device_and_dtype()
    shape = SHAPES[args.shape]
    batch = make_batch(shape, device, dtype)["skillgpt"]
    figures = {}
    for mode in ("eager", "compiled"):
        model, opt = build("skillgpt", shape, device, dtype)
        if mode == "compiled":
            tic = time.perf_counter()
            compiled = compile_blocks(model, "inductor")
            step("skillgpt", model, opt, batch)  # the compile itself
            figures["compile_s"] = round(time.perf_counter() - tic, 1)
            figures["blocks"] = len(compiled)
        with torch.no_grad():
            figures[f"{mode}_loss"] = round(float(model(**batch)), 5)
        figures[f"{mode}_step_s"] = round(timed_steps("skillgpt", model, opt, batch, 1, args.steps), 4)
        del model, opt
    figures["speedup"] = round(figures["eager_step_s"] / figures["compiled_step_s"], 3)
    result("compile", shape=args.shape, **figures)


CHECKS = {"env": check_env, "nccl": check_nccl, "train": check_train, "flash": check_flash, "qlora": check_qlora,
          "compile": check_compile}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("check", choices=sorted(CHECKS))
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-1.5b" if torch.cuda.is_available() else "cpu-small")
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    CHECKS[args.check](args)


if __name__ == "__main__":
    main()
