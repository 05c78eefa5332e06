"""Stage-2 train step: SkillGPT vs transformers' LlavaForConditionalGeneration at equal size, same run.

    python bench/train_step.py [--shape cpu-small|qwen2.5-1.5b] [--steps 10] [--warmup 2] [--out bench/out/train_step]

Both models get the same randomly initialised Qwen2-architecture LLM config (vocabulary 151,936), the
same batch and sequence (text + visual tokens; only the answer tokens are supervised, as in skill Q&A),
LoRA (peft, r 16) on q/k/v/o_proj of the LLM, a trainable mlp2x_gelu projector and a frozen vision side
of equal size: SkillGPT's own ImageBind video encoder (clip_tokens, pool 1, no class token: g*g tokens
per clip) vs a CLIP vision tower of the same width, depth, heads, image and patch size (Llava's
"default" feature selection drops the class token: g*g tokens per image, one image per clip).

Step = forward + backward + AdamW step. Time: median over --steps steps after --warmup, the two models
interleaved step by step (A, B, A, B, ...) in one process so that other load on the machine hits both.
Memory: one fresh subprocess per model (run alternately), each building one model and running
warmup + 2 steps; on CPU peak RSS (ru_maxrss; the high-water mark is reset with /proc/self/clear_refs
after building), on CUDA torch.cuda.max_memory_allocated. Prints a markdown table, writes results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config

from skillgpt.config.schema import EncoderConfig, FreezeConfig, LoraConfig, ProjectorConfig, VideoConfig
from skillgpt.data.templates import IGNORE_INDEX, PLACEHOLDERS
from skillgpt.models.encoders import build_encoder
from skillgpt.models.freeze import apply_freeze_policy
from skillgpt.models.projectors import build_projector
from skillgpt.models.skill_model import Branch, SkillGPT

VOCAB = 151_936  # Qwen2.5's vocabulary
IMAGE_TOKEN = 151_655  # Qwen2.5's <|image_pad|>: Llava's placeholder id (inside the vocabulary)
LORA = dict(r=16, alpha=32, dropout=0.05, targets=["q_proj", "k_proj", "v_proj", "o_proj"])
SHAPES = {  # llm: Qwen2 config; vision: both towers; clips = images per sample; text/answer: tokens per sample
    "cpu-small": dict(llm=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                               num_key_value_heads=2),
                      vision=dict(width=128, layers=2, heads=4, image_size=112), clips=4, batch=2, text=48, answer=16),
    "qwen2.5-1.5b": dict(llm=dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                  num_key_value_heads=2),
                         vision=dict(width=1280, layers=32, heads=16, image_size=224), clips=16, batch=4, text=96, answer=32),
}


def qwen2_config(shape: dict) -> Qwen2Config:
    return Qwen2Config(vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=4096, rms_norm_eps=1e-6,
                       **shape["llm"])


def build_skillgpt(shape: dict, dtype: torch.dtype, lora: bool = True) -> SkillGPT:
    """What `build_model` assembles for stage 2, from an in-process LLM instead of a folder (without LoRA
    and freeze policy with lora=False: inference)."""
    v = shape["vision"]
    enc_cfg = EncoderConfig(name="imagebind", image_size=v["image_size"], patch_size=14, vision_width=v["width"],
                            vision_layers=v["layers"], vision_heads=v["heads"], out_dim=v["width"],
                            output="clip_tokens", keep_cls=False, pool=1)
    encoder = build_encoder(enc_cfg, VideoConfig(num_clips=shape["clips"], resolution=v["image_size"]))
    llm = AutoModelForCausalLM.from_config(qwen2_config(shape), attn_implementation="sdpa")
    layouts = {"video": {"video": encoder.layout(shape["clips"])}, "image": {"video": encoder.layout(1)}}
    projector = build_projector(ProjectorConfig(name="mlp2x_gelu"), encoder.out_dim, llm.config.hidden_size,
                                layouts["video"]["video"])
    model = SkillGPT(nn.ModuleDict({"video": encoder}), nn.ModuleDict({"video": projector}), llm, layouts,
                     {"video": [Branch("video")], "audio": []})
    if lora:
        peft_lora = LoraConfig(r=LORA["r"], alpha=LORA["alpha"], dropout=LORA["dropout"], target_modules=LORA["targets"])
        apply_freeze_policy(model, FreezeConfig(encoder="frozen", projector="full", llm="lora"), peft_lora)
    return model.to(dtype)


def llava_config(shape: dict) -> LlavaConfig:
    v = shape["vision"]
    vision = CLIPVisionConfig(hidden_size=v["width"], intermediate_size=4 * v["width"], num_hidden_layers=v["layers"],
                              num_attention_heads=v["heads"], image_size=v["image_size"], patch_size=14)
    return LlavaConfig(vision_config=vision, text_config=qwen2_config(shape), image_token_index=IMAGE_TOKEN,
                       image_seq_length=(v["image_size"] // 14) ** 2, projector_hidden_act="gelu")


def build_llava(shape: dict, dtype: torch.dtype, lora: bool = True) -> nn.Module:
    """The reference: Llava with a frozen CLIP tower, a trainable projector and LoRA on the LLM's q/k/v/o."""
    model = LlavaForConditionalGeneration._from_config(llava_config(shape), attn_implementation="sdpa")
    if not lora:
        return model.to(dtype)
    targets = r".*language_model.*\.(" + "|".join(LORA["targets"]) + ")"  # not the CLIP tower's q/k/v_proj
    model = get_peft_model(model, PeftLoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                                 target_modules=targets))
    for p in model.base_model.model.model.multi_modal_projector.parameters():
        p.requires_grad_(True)
    return model.to(dtype)


def make_batch(shape: dict, device: torch.device, dtype: torch.dtype) -> dict[str, dict]:
    """One batch, as each model takes it: [text/2][visual][text/2][answer], answer tokens supervised."""
    g = torch.Generator().manual_seed(0)
    b, s, size = shape["batch"], shape["clips"], shape["vision"]["image_size"]
    n_vis = s * (size // 14) ** 2
    half = shape["text"] // 2
    text = torch.randint(1000, 150_000, (b, shape["text"] + shape["answer"]), generator=g)
    vis = torch.full((b, n_vis), IMAGE_TOKEN)
    ids = torch.cat([text[:, :half], vis, text[:, half:]], dim=1)
    labels = ids.clone()
    labels[:, : -shape["answer"]] = IGNORE_INDEX
    mask = torch.ones_like(ids)
    pixels = torch.randn(b, s, 3, 2, size, size, generator=g)  # [B, S, C, T, H, W]: 2 frames per clip
    skill_ids = ids.masked_fill(ids == IMAGE_TOKEN, PLACEHOLDERS["<video>"])
    return {
        "skillgpt": dict(input_ids=skill_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device),
                         media={"video": pixels.to(device, dtype)}),
        "llava": dict(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device),
                      pixel_values=pixels[:, :, :, 0].flatten(0, 1).to(device, dtype)),  # one image per clip
    }


def build(name: str, shape: dict, device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    model = (build_skillgpt if name == "skillgpt" else build_llava)(shape, dtype).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, opt


def step(name: str, model: nn.Module, opt: torch.optim.Optimizer, batch: dict) -> float:
    """One forward + backward + optimizer step; returns its wall time (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    tic = time.perf_counter()
    out = model(**batch)
    loss = out if name == "skillgpt" else out.loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    return time.perf_counter() - tic


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def worker(name: str, shape: dict, device: torch.device, dtype: torch.dtype, steps: int) -> dict:
    """Peak memory of one model in this (fresh) process: model build, then training steps."""
    cuda = device.type == "cuda"
    before = torch.cuda.memory_allocated() / 2**20 if cuda else _rss_mib()
    model, opt = build(name, shape, device, dtype)
    batch = make_batch(shape, device, dtype)[name]
    if cuda:
        built = torch.cuda.memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    else:
        built = _rss_mib()
        with open("/proc/self/clear_refs", "w") as f:  # reset the RSS high-water mark: training peak only
            f.write("5")
    for _ in range(steps):
        step(name, model, opt, batch)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model_mib": round(built - before, 1), "train_extra_mib": round(peak - built, 1),
            "peak_mib": round(peak - before, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="cpu-small")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--mem-rounds", type=int, default=2, help="memory subprocesses per model, run alternately")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", default="bench/out/train_step")
    ap.add_argument("--worker", choices=["skillgpt", "llava"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    shape = SHAPES[args.shape]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if args.worker:
        print(json.dumps(worker(args.worker, shape, device, dtype, args.warmup + 2)))
        return
    names = ["skillgpt", "llava"]
    mem: dict[str, list[dict]] = {n: [] for n in names}
    for _ in range(args.mem_rounds):  # A, B, A, B: fresh processes, so the two never share an allocator
        for n in names:
            cmd = [sys.executable, __file__, "--worker", n, "--shape", args.shape, "--warmup", str(args.warmup),
                   "--threads", str(args.threads)]
            mem[n].append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]))
    load_before = os.getloadavg()
    models = {n: build(n, shape, device, dtype) for n in names}
    batches = make_batch(shape, device, dtype)
    n_vis = int((batches["llava"]["input_ids"] == IMAGE_TOKEN).sum()) // shape["batch"]
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(args.warmup + args.steps):  # interleaved step by step
        for n in (names if i % 2 == 0 else names[::-1]):
            t = step(n, *models[n], batches[n])
            if i >= args.warmup:
                times[n].append(t)
    rows = {}
    for n in names:
        trainable = sum(p.numel() for p in models[n][0].parameters() if p.requires_grad)
        m = min(mem[n], key=lambda r: r["peak_mib"])  # least disturbed run; all runs are in results.json
        rows[n] = {"step_s": statistics.median(times[n]), "trainable": trainable, **m}
    s, r = rows["skillgpt"], rows["llava"]
    info = {"shape": args.shape, "config": shape, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU",
            "dtype": str(dtype), "threads": torch.get_num_threads(), "visual_tokens_per_sample": n_vis,
            "seq_len": batches["llava"]["input_ids"].shape[1], "times": times, "memory_runs": mem, "rows": rows,
            "step_ratio": s["step_s"] / r["step_s"], "peak_ratio": s["peak_mib"] / r["peak_mib"],
            "train_extra_ratio": s["train_extra_mib"] / r["train_extra_mib"],
            "loadavg_before_after": [load_before[0], os.getloadavg()[0]]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results_{args.shape}.json").write_text(json.dumps(info, indent=2))
    mem_kind = "max_memory_allocated" if device.type == "cuda" else "peak RSS"
    print(f"\nshape {args.shape}: batch {shape['batch']} x {info['seq_len']} tokens ({n_vis} visual, "
          f"{shape['answer']} supervised per sample), vocab {VOCAB}, {info['device']} {dtype}, {info['threads']} threads, "
          f"1-min load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print(f"| model | trainable params | median step (s) | model ({mem_kind}, MiB) | training extra (MiB) | peak (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, row in (("SkillGPT", s), ("Llava (reference)", r)):
        print(f"| {label} | {row['trainable']:,} | {row['step_s']:.3f} | {row['model_mib']:.0f} | "
              f"{row['train_extra_mib']:.0f} | {row['peak_mib']:.0f} |")
    print(f"| **SkillGPT / Llava** | | **{info['step_ratio']:.2f}x** | | **{info['train_extra_ratio']:.2f}x** | "
          f"**{info['peak_ratio']:.2f}x** |")


if __name__ == "__main__":
    main()
