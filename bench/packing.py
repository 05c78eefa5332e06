"""Padding in SkillGPT's training micro-batches, with and without `data.group_by_length`, and what
sequence packing could save at most.

    python bench/packing.py [--per-level 100] [--micro-batch 4 8] [--time-reps 30] [--threads 1] [--no-results]

Builds the training datasets the way `train()` does (`build_train_dataset` on the stage's config with
each preset in config/model/) from the synthetic skill set (`skillgpt make-sample-data`, 400 training
videos by default, as in the quickstart): stage 1 = captions, stage 2 = skill Q&A. Each sample's length
is `len(input_ids)` as the collator pads it, visual placeholders expanded to the preset's count
(`SkillGPT.placeholder_tokens()` of the preset's model built on the meta device: no weights).

Text is tokenized with the tiny preset's BPE tokenizer (`skillgpt make-tiny-llm`) for every preset: the
real presets' tokenizers are not available offline. The Qwen preset's `chat_template` is emulated with
Qwen2.5's ChatML layout (default system prompt, <|im_start|>/<|im_end|> added as single tokens).

Micro-batches follow `epoch_order` + `rank_share` with the config's seed and epochs (1 process,
grad_accum 1; whole steps only). For every micro-batch: computed = rows x longest row, useful = sum of
lengths. Padding = 1 - useful / computed, which is also the most ideal packing (varlen attention, no
padding at all) can save. "Rows of max_length" packs the epoch's samples greedily, in order, into rows of
`model.llm.max_length` tokens and counts the unused tail of each row (packing without varlen kernels).

Optionally (--time-reps > 0) times forward + backward of the tiny LLM on the most padded stage-2
micro-batch: padded; the same tokens without padding; packed into one row (position ids restart per
sample, so transformers applies a block-diagonal causal mask; checked: same logits as padded).
Prints a markdown table, writes results.json and appends a dated section to bench/RESULTS.md
(unless --no-results). Runs in well under a minute on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from skillgpt.cli import main as cli
from skillgpt.config import load_config
from skillgpt.data.mixture import build_train_dataset
from skillgpt.models.build import build_model
from skillgpt.models.llm import load_tokenizer
from skillgpt.train.order import epoch_order, rank_share

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from memory_estimate import LLM_CONFIGS  # noqa: E402  (official LLM dimensions, for the meta build)

PRESETS = ["tiny", "vicuna-7b-v0", "qwen2.5-1.5b"]
STAGES = {1: "captions", 2: "skill Q&A"}
QWEN_CHATML = (  # Qwen2.5-Instruct's chat template without tools
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}"
    "{%- for m in messages %}{%- if not (m['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def prepare(out: Path, per_level: int) -> tuple[Path, Path, float]:
    """Synthetic skill set and tiny LLM (tokenizer), made once and reused; returns the seconds spent making them."""
    data, llm = out / "data", out / "tiny-llm"
    tic = time.perf_counter()
    train = data / "skill_train.json"
    if not train.is_file() or len(json.loads(train.read_text())) != 4 * per_level:
        assert cli(["make-sample-data", "--out", str(data), "--per-level", f"train={per_level},val=1,test=1"]) == 0
    if not (llm / "tokenizer.json").is_file():
        assert cli(["make-tiny-llm", "--data", str(data), "--out", str(llm), "--pretrain-steps", "0"]) == 0
    return data, llm, time.perf_counter() - tic


def tokenizer_for(preset: str, tiny_llm: Path):
    tok = load_tokenizer(tiny_llm)
    if preset.startswith("qwen"):
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template, tok.eos_token = QWEN_CHATML, "<|im_end|>"
    return tok


def stage_lengths(preset: str, stage: int, data: Path, tiny_llm: Path) -> dict:
    """The stage's training dataset as `train()` builds it: lengths, seed, epochs, micro-batch, max_length."""
    with tempfile.TemporaryDirectory() as tmp:
        llm_path = tiny_llm
        if preset in LLM_CONFIGS:  # weightless folder: the preset's own LLM architecture on the meta device
            llm_path = Path(tmp)
            (llm_path / "config.json").write_text(json.dumps(LLM_CONFIGS[preset]))
        split = "captions" if stage == 1 else "skill"
        cfg = load_config(REPO / "config" / f"stage_{stage}.yaml", [
            f"preset={preset}", f"model.llm.path={llm_path}", "train.init_from=null",
            f"data.train={data}/{split}_train.json", "data.val=null", "data.test=null",
            "data.probe_media=false", "data.cache_videos=false"])  # lengths do not depend on decoding
        model, _ = build_model(cfg, on_meta=True)
        placeholders = model.placeholder_tokens()
    dataset = build_train_dataset(cfg, tokenizer_for(preset, tiny_llm), placeholders)
    level = {v["id"]: v["level"] for v in json.loads((data / "metadata.json").read_text())["videos"]}
    return {"dataset": dataset, "lengths": [k[1] for k in dataset.group_keys()], "seed": cfg.train.seed,
            "levels": [level[ex.id] for ex in dataset.examples],
            "epochs": cfg.train.epochs, "config_micro_batch": cfg.train.micro_batch_size,
            "max_length": cfg.model.llm.max_length, "visual_tokens": placeholders["<video>"],
            "clips": cfg.data.video.num_clips}


def micro_batches(st: dict, micro_batch: int, grouped: bool) -> list[list[int]]:
    """Every epoch's micro-batches in training order (1 process, grad_accum 1)."""
    out = []
    n = len(st["lengths"])
    for epoch in range(st["epochs"]):
        order = epoch_order(st["dataset"], st["seed"], epoch, micro_batch, grouped)
        mine = rank_share(order[: (n // micro_batch) * micro_batch], micro_batch, 1, 1, 0)
        out += [mine[i : i + micro_batch] for i in range(0, len(mine), micro_batch)]
    return out


def padding(lengths: list[int], batches: list[list[int]]) -> tuple[int, int]:
    """(useful tokens, computed tokens) over the batches."""
    useful = sum(lengths[i] for b in batches for i in b)
    computed = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return useful, computed


def one_level(levels: list[str], batches: list[list[int]]) -> float:
    """Fraction of micro-batches whose samples all share one proficiency level."""
    return sum(len({levels[i] for i in b}) == 1 for b in batches) / len(batches)


def row_packing_waste(lengths: list[int], batches: list[list[int]], max_length: int) -> float:
    """Greedy in-order packing of the same samples into rows of max_length: unused fraction of the rows."""
    rows, fill = 0, max_length
    for i in (i for b in batches for i in b):
        if fill + lengths[i] > max_length:
            rows, fill = rows + 1, 0
        fill += lengths[i]
    return 1 - sum(lengths[i] for b in batches for i in b) / (rows * max_length)


def time_layouts(st: dict, tiny_llm: Path, batch: list[int], reps: int) -> dict:
    """Forward + backward of the tiny LLM on one micro-batch laid out three ways: padded [B, longest];
    the samples' tokens reshaped to [B, sum L_i // B] (as many tokens as the samples, no padding, no
    mask: the compute ideal varlen packing would do); one packed row [1, sum L_i] whose block-diagonal
    causal mask SDPA applies densely (packing without varlen kernels)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_pretrained(tiny_llm, attn_implementation="sdpa").train()
    ids = [torch.tensor(st["dataset"].examples[i].input_ids).clamp(min=0) for i in batch]  # visual ids -> text id
    lens = [len(x) for x in ids]
    padded = torch.zeros(len(ids), max(lens), dtype=torch.long)
    mask = torch.zeros_like(padded)
    for r, x in enumerate(ids):
        padded[r, : len(x)], mask[r, : len(x)] = x, 1
    layouts = {"padded": dict(input_ids=padded, attention_mask=mask),
               "unpadded": dict(input_ids=torch.cat(ids)[: len(ids) * (sum(lens) // len(ids))].view(len(ids), -1)),
               "packed": dict(input_ids=torch.cat(ids)[None],
                              position_ids=torch.cat([torch.arange(n) for n in lens])[None])}
    with torch.no_grad():  # the packed row is masked per sample (detected from the position ids, no KV cache)
        a = llm(**layouts["padded"], use_cache=False).logits[mask.bool()]
        b = llm(**layouts["packed"], use_cache=False).logits[0]
        assert torch.allclose(a, b, atol=1e-4), f"packed logits differ by {(a - b).abs().max():.2e}"

    def step(kw: dict) -> float:
        tic = time.perf_counter()
        llm(**kw, use_cache=False).logits.float().square().mean().backward()
        llm.zero_grad(set_to_none=True)
        return time.perf_counter() - tic

    names = list(layouts)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps + 2):  # 2 warm-up rounds, then interleaved, the order rotating
        for k in names[r % 3 :] + names[: r % 3]:
            t = step(layouts[k])
            if r >= 2:
                times[k].append(t)
    return {"batch": len(batch), "longest": max(lens), "sum_lengths": sum(lens), "padded_tokens": padded.numel(),
            "median_ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
            "min_ms": {k: 1e3 * min(v) for k, v in times.items()}, "times_s": times}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--per-level", type=int, default=100, help="synthetic training videos per level (4 levels)")
    ap.add_argument("--micro-batch", type=int, nargs="+", help="micro-batch sizes (default: those the configs use)")
    ap.add_argument("--time-reps", type=int, default=30, help="timed rounds of the tiny LLM's fwd+bwd (0: skip)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the timing (1: steadier on shared cores)")
    ap.add_argument("--out", default="bench/out/packing")
    ap.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    tic = time.perf_counter()
    out = Path(args.out).resolve()
    data, tiny_llm, made = prepare(out, args.per_level)
    stages = {(p, s): stage_lengths(p, s, data, tiny_llm) for p in PRESETS for s in STAGES}
    sizes = sorted(set(args.micro_batch or [st["config_micro_batch"] for st in stages.values()]))
    rows = []
    for (preset, stage), st in stages.items():
        L = st["lengths"]
        for mb in sizes:
            shuffled, grouped = micro_batches(st, mb, False), micro_batches(st, mb, True)
            (u, c_s), (_, c_g) = padding(L, shuffled), padding(L, grouped)
            rows.append({"preset": preset, "stage": stage, "visual_tokens": st["visual_tokens"], "clips": st["clips"],
                         "max_length": st["max_length"], "samples": len(L), "epochs": st["epochs"],
                         "len_min": min(L), "len_mean": statistics.mean(L), "len_max": max(L), "micro_batch": mb,
                         "config_micro_batch": mb == st["config_micro_batch"], "useful_tokens": u,
                         "computed_shuffled": c_s, "computed_grouped": c_g, "pad_shuffled": 1 - u / c_s,
                         "pad_grouped": 1 - u / c_g, "row_waste": row_packing_waste(L, grouped, st["max_length"]),
                         "one_level_shuffled": one_level(st["levels"], shuffled),
                         "one_level_grouped": one_level(st["levels"], grouped)})
    timing = None
    if args.time_reps > 0:
        torch.set_num_threads(args.threads)
        st, L = stages[("tiny", 2)], stages[("tiny", 2)]["lengths"]
        worst = max(micro_batches(st, st["config_micro_batch"], False),
                    key=lambda b: len(b) * max(L[i] for i in b) - sum(L[i] for i in b))
        timing = time_layouts(st, tiny_llm, worst, args.time_reps)
    runtime = time.perf_counter() - tic
    machine = (f"{os.cpu_count()}-core {platform.machine()} CPU, "
               f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
    (out / "results.json").write_text(json.dumps({"machine": machine, "runtime_s": runtime, "prepare_s": made,
                                                  "rows": rows, "timing": timing}, indent=2))
    lines = [f"## Sequence packing: padding in training micro-batches ({datetime.date.today()})", "",
             f"Command: `python bench/packing.py{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}` ({machine}; "
             f"{runtime:.0f} s, {made:.0f} s of it making the data set and tokenizer). Synthetic skill set, "
             f"{rows[0]['samples']} training samples per stage; lengths as the collator pads them "
             "(text + visual tokens), text tokenized with the tiny preset's BPE tokenizer for every preset "
             "(real tokenizers not available offline; Qwen's ChatML layout emulated). All epochs of each "
             "stage's config, `epoch_order` with its seed. Padding = padded / computed tokens = the most that "
             "ideal (varlen) packing can save; `*` = the config's micro-batch. Last column: greedy packing "
             "into rows of `max_length` without varlen kernels, unused fraction of those rows. One level: "
             "micro-batches whose samples all have the same proficiency level (the label), shuffled / "
             "group_by_length.", "",
             "| preset (visual tokens, max_length) | stage | samples x epochs | length min / mean / max | "
             "micro-batch | padding, shuffled (default) | padding, group_by_length | rows of max_length: unused "
             "| one level |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['preset']} ({r['clips']} clips, {r['visual_tokens']}; {r['max_length']}) | "
                     f"{r['stage']}: {STAGES[r['stage']]} | {r['samples']} x {r['epochs']} | "
                     f"{r['len_min']} / {r['len_mean']:.0f} / {r['len_max']} | {r['micro_batch']}"
                     f"{'*' if r['config_micro_batch'] else ''} | {100 * r['pad_shuffled']:.1f}% | "
                     f"{100 * r['pad_grouped']:.1f}% | {100 * r['row_waste']:.1f}% | "
                     f"{100 * r['one_level_shuffled']:.0f}% / {100 * r['one_level_grouped']:.0f}% |")
    if timing:
        t, med, low = timing, timing["median_ms"], timing["min_ms"]
        lines += ["", f"Tiny LLM (2 layers, hidden 128) forward + backward, sdpa, {args.threads} torch thread(s), "
                  f"{args.time_reps} rounds interleaved, on the most padded tiny stage-2 micro-batch "
                  f"({t['batch']} samples, {t['sum_lengths']} tokens; padded {t['batch']} x {t['longest']} = "
                  f"{t['padded_tokens']}: "
                  f"{t['padded_tokens'] / t['sum_lengths']:.2f}x the tokens):", "",
                  "| layout | median ms | vs padded | fastest ms | vs padded |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for k, label in (("padded", f"padded {t['batch']} x {t['longest']}"),
                         ("unpadded", f"{t['batch']} x {t['sum_lengths'] // t['batch']}: the same tokens without "
                                      "padding (the compute of ideal varlen packing)"),
                         ("packed", f"one packed row 1 x {t['sum_lengths']}, block-diagonal mask (no varlen kernel)")):
            lines.append(f"| {label} | {med[k]:.1f} | {med[k] / med['padded']:.2f}x | {low[k]:.1f} | "
                         f"{low[k] / low['padded']:.2f}x |")
    text = "\n".join(lines)
    print("\n" + text)
    if not args.no_results:
        with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
