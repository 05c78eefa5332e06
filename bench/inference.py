"""Inference on a 16-clip video: SkillGPT.generate vs plain generate on Llava of equal size, same run.

    python bench/inference.py [--shape tiny|cpu-small|qwen2.5-1.5b] [--max-new-tokens 64] [--runs 7]

--shape tiny (default, CPU):
SkillGPT is the tiny preset built in-process by `build_model` (sample data and the tiny LLM are made
with `skillgpt make-sample-data` / `make-tiny-llm` in --out), with 16 clips per video and
`model.encoder.pool=1 keep_cls=false` so each clip gives the 4x4 = 16 patch tokens a CLIP tower of the
same size gives Llava (256 visual tokens on both sides). The reference is transformers'
LlavaForConditionalGeneration with a CLIP vision tower of the tiny encoder's size (width 64, 2 layers,
4 heads, 56 px, patch 14), the same mlp2x_gelu projector shape and the very same LLM weights (copied).
Both get the same prompt (vicuna_v0 template) and the same preprocessed video (`load_video`; the
decoding is not timed): SkillGPT all 16 clips x 2 frames, Llava the first frame of each clip as 16 images.

--shape cpu-small / qwen2.5-1.5b (the latter on a GPU, bf16): bench/train_step.py's models at that shape
with random weights (Qwen2 LLM with vocabulary 151,936; ImageBind-shaped video encoder vs a CLIP tower of
equal size; 16 clips x 256 visual tokens at qwen2.5-1.5b), no LoRA, Llava carrying SkillGPT's LLM weights,
a random prompt of 48 text tokens around the visual ones and random pixels.

Greedy, KV cache on, exactly --max-new-tokens new tokens (min_new_tokens = max_new_tokens, so EOS
cannot stop either early). Time to first token = a generate call with max_new_tokens=1 (vision
encoding + prefill + one token); decode tokens/s = (N - 1) / (time(N) - time(1)). Medians over --runs,
the two models alternated (A, B, A, B, ...). Prints a markdown table, writes results_<shape>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration

from skillgpt.cli import main as cli
from skillgpt.config import load_config
from skillgpt.data.templates import PLACEHOLDERS, tokenize_conversation
from skillgpt.data.video import load_video
from skillgpt.models.build import build_model

REPO = Path(__file__).resolve().parents[1]
QUESTION = "<video>\nWhat is the proficiency level of this athlete, and what should they improve?"


def build_skillgpt(out: Path):
    data, llm = out / "data", out / "tiny-llm"
    if not (data / "skill_test.json").is_file():
        assert cli(["make-sample-data", "--out", str(data), "--per-level", "train=1,val=1,test=1"]) == 0
    if not (llm / "config.json").is_file():
        assert cli(["make-tiny-llm", "--data", str(data), "--out", str(llm), "--pretrain-steps", "0"]) == 0
    cfg = load_config(REPO / "config" / "stage_2.yaml", [
        "preset=tiny", f"model.llm.path={llm}", f"data.train={data}/skill_train.json",
        f"data.val={data}/skill_val.json", f"data.test={data}/skill_test.json", "train.init_from=null",
        "freeze.llm=frozen", "data.video.num_clips=16", "model.encoder.pool=1", "model.encoder.keep_cls=false",
        "model.llm.max_length=2048"])
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg)
    video = sorted((data / "videos" / "test").glob("*.mp4"))[0]
    return model.eval(), tokenizer, cfg, video


def build_llava(model, cfg, image_token: int) -> LlavaForConditionalGeneration:
    """Llava of the same size, carrying SkillGPT's LLM weights."""
    e = cfg.model.encoder
    vision = CLIPVisionConfig(hidden_size=e.vision_width, intermediate_size=4 * e.vision_width,
                              num_hidden_layers=e.vision_layers, num_attention_heads=e.vision_heads,
                              image_size=e.image_size, patch_size=e.patch_size)
    causal_lm = model.causal_lm
    cfg = LlavaConfig(vision_config=vision, text_config=causal_lm.config, image_token_index=image_token,
                      image_seq_length=(e.image_size // e.patch_size) ** 2, projector_hidden_act="gelu")
    torch.manual_seed(0)
    llava = LlavaForConditionalGeneration._from_config(cfg, attn_implementation="sdpa")
    llava.model.language_model.load_state_dict(causal_lm.model.state_dict())
    llava.lm_head.load_state_dict(causal_lm.lm_head.state_dict())
    return llava.eval()


def prepare_tiny(out: Path) -> dict:
    """The tiny preset, its tokenizer's prompt and a real sample video (see the module docstring)."""
    model, tokenizer, cfg, video = build_skillgpt(out)
    n_vis = model.num_visual_tokens()
    image_token = len(tokenizer) - 1  # any id the prompt text does not use
    ids = tokenize_conversation([{"from": "human", "value": QUESTION}], tokenizer, cfg.model.llm.template,
                                {"<video>": n_vis}, cfg.model.llm.max_length, add_generation_prompt=True)["input_ids"]
    assert image_token not in ids
    skill_ids = torch.tensor([ids])
    pixels = load_video(video, cfg.data.video)  # [16, 3, 2, 56, 56]
    assert pixels.shape[0] == 16 and n_vis == 256, (pixels.shape, n_vis)
    return {"skillgpt": model, "llava": build_llava(model, cfg, image_token), "skill_ids": skill_ids,
            "llava_ids": skill_ids.masked_fill(skill_ids == PLACEHOLDERS["<video>"], image_token),
            "pixels": pixels, "pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id}


def prepare_shape(name: str, device: torch.device, dtype: torch.dtype) -> dict:
    """bench/train_step.py's models at `name` (random weights, no LoRA), Llava with SkillGPT's LLM weights."""
    from train_step import IMAGE_TOKEN, SHAPES, build_llava as llava_at, build_skillgpt as skillgpt_at

    shape = dict(SHAPES[name], clips=16)
    torch.manual_seed(0)
    model = skillgpt_at(shape, dtype, lora=False).to(device).eval()
    llava = llava_at(shape, dtype, lora=False).to(device).eval()
    llava.model.language_model.load_state_dict(model.causal_lm.model.state_dict())
    llava.lm_head.load_state_dict(model.causal_lm.lm_head.state_dict())
    n_vis = model.num_visual_tokens()
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1000, 150_000, (1, 48), generator=g)
    skill_ids = torch.cat([text[:, :24], torch.full((1, n_vis), PLACEHOLDERS["<video>"]), text[:, 24:]], dim=1)
    size = shape["vision"]["image_size"]
    return {"skillgpt": model, "llava": llava, "skill_ids": skill_ids.to(device),
            "llava_ids": skill_ids.masked_fill(skill_ids == PLACEHOLDERS["<video>"], IMAGE_TOKEN).to(device),
            "pixels": torch.randn(16, 3, 2, size, size, generator=g).to(device, dtype), "pad": 0, "eos": None}


@torch.no_grad()
def timed(fn) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    tic = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - tic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=["tiny", "cpu-small", "qwen2.5-1.5b"], default="tiny")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default); 1 because the ops of a tiny model are too small to share, "
                         "and 2 threads on 2 shared cores stalled some runs 50x")
    ap.add_argument("--out", default="bench/out/inference")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    case = prepare_tiny(out) if args.shape == "tiny" else prepare_shape(args.shape, device, dtype)
    model, llava, skill_ids, llava_ids = case["skillgpt"], case["llava"], case["skill_ids"], case["llava_ids"]
    n_vis = int((skill_ids == PLACEHOLDERS["<video>"]).sum())
    media = {"video": case["pixels"].unsqueeze(0)}
    images = case["pixels"][:, :, 0]  # Llava: the first frame of each clip, [16, 3, R, R]
    mask = torch.ones_like(llava_ids)

    def gen_kwargs(n: int) -> dict:
        return dict(max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                    pad_token_id=case["pad"], eos_token_id=case["eos"])

    runners = {
        "skillgpt": lambda n: model.generate(skill_ids, media, **gen_kwargs(n)),
        "llava": lambda n: llava.generate(input_ids=llava_ids, attention_mask=mask, pixel_values=images, **gen_kwargs(n)),
    }
    with torch.no_grad():  # warm-up, and check both produce exactly N new tokens
        assert runners["skillgpt"](args.max_new_tokens).shape[1] == args.max_new_tokens
        assert runners["llava"](args.max_new_tokens).shape[1] == llava_ids.shape[1] + args.max_new_tokens
    load_before = os.getloadavg()[0]
    times = {n: {"first": [], "full": []} for n in runners}
    for i in range(args.runs):
        for name in (runners if i % 2 == 0 else list(runners)[::-1]):
            times[name]["first"].append(timed(lambda: runners[name](1)))
            times[name]["full"].append(timed(lambda: runners[name](args.max_new_tokens)))
    rows = {}
    for name, t in times.items():
        first, full = statistics.median(t["first"]), statistics.median(t["full"])
        rows[name] = {"ttft_s": first, "total_s": full, "decode_tok_s": (args.max_new_tokens - 1) / (full - first)}
    s, r = rows["skillgpt"], rows["llava"]
    info = {"prompt_tokens": skill_ids.shape[1], "visual_tokens": n_vis, "max_new_tokens": args.max_new_tokens,
            "threads": torch.get_num_threads(), "times": times, "rows": rows,
            "ttft_ratio": s["ttft_s"] / r["ttft_s"], "decode_ratio": s["decode_tok_s"] / r["decode_tok_s"],
            "loadavg_before_after": [load_before, os.getloadavg()[0]]}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"results_{args.shape}.json").write_text(json.dumps(info, indent=2))
    where = f"{torch.cuda.get_device_name(0)} {dtype}" if device.type == "cuda" else f"CPU {info['threads']} threads"
    print(f"\n{args.shape}: 16-clip video, prompt {info['prompt_tokens']} tokens ({n_vis} visual), "
          f"{args.max_new_tokens} new tokens, greedy, KV cache, {where}, median of {args.runs}, "
          f"1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| model | time to first token (ms) | total (ms) | decode tokens/s |")
    print("| --- | ---: | ---: | ---: |")
    for label, row in (("SkillGPT (`SkillGPT.generate`)", s), ("Llava (reference, `generate`)", r)):
        print(f"| {label} | {1000 * row['ttft_s']:.1f} | {1000 * row['total_s']:.1f} | {row['decode_tok_s']:.0f} |")
    print(f"| **SkillGPT / Llava** | **{info['ttft_ratio']:.2f}x** (lower is better) | "
          f"{s['total_s'] / r['total_s']:.2f}x | **{info['decode_ratio']:.2f}x** (higher is better) |")


if __name__ == "__main__":
    main()
