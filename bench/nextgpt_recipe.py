"""NExT-GPT's stage 2 through the real recipe and the real commands, measured on held-out captions (issue 18).

From the synthetic set (``skillgpt make-sample-data``, default sizes) and the tiny LLM (``skillgpt make-tiny-llm``),
both made here unless --data / --llm name existing folders:

1. a stand-in decoder folder (diffusers layout: ``text_encoder/``, a seeded random ``CLIPTextModel`` with 77
   positions and Stable Diffusion 1.5's width 768, the tiny-nextgpt preset's ``image_shape``; ``tokenizer/``, the
   tiny LLM's own BPE tokenizer cut at 77, so that the synthetic captions stay distinct token sequences), since no
   Stable Diffusion weights can be downloaded here; checked through ``caption_cache.load_text_encoder``;
2. the recipe's data (``python -m skillgpt.generation.recipe_data``) and a held-out file: the test split's ``tx``
   samples whose caption is not a training caption, one per distinct caption;
3. ``skillgpt cache-caption-embeddings`` of the train, val and test captions;
4. ``skillgpt train config/nextgpt/stage_1.yaml`` and ``skillgpt train config/nextgpt/stage_2.yaml`` with the
   recipe's settings (only the paths are overridden; extra stage-2 settings with --stage2 key=value);
5. ``skillgpt eval --ckpt <stage 2> data.test=<held-out file>`` (the stage file's ``eval.task=generation``).

Prints the stage-2 loss (metrics.jsonl: first and last step, first and last epoch's mean), and the held-out
l2 loss, retrieval top-1 and chance from the eval's results.json; writes WORK/summary.json.

usage: python bench/nextgpt_recipe.py [--work bench/out/nextgpt_recipe] [--data DIR] [--llm DIR]
                                       [--stage2 train.epochs=80 ...]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEXT_LEN, TEXT_WIDTH = 77, 768  # Stable Diffusion 1.5's prompt_embeds: the tiny-nextgpt preset's image_shape


def skillgpt(*args: str) -> None:
    """One real `skillgpt` command, as its own process (from the repository root: the recipe's dsconfig paths)."""
    exe = Path(sys.executable).with_name("skillgpt")
    cmd = [str(exe) if exe.exists() else "skillgpt", *args]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def make_standin_decoder(llm: Path, out: Path, seed: int = 0) -> Path:
    """text_encoder/ (seeded random CLIPTextModel, 77 positions, width 768) + tokenizer/ (the tiny LLM's, 77 long)."""
    import torch
    from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

    tokenizer = AutoTokenizer.from_pretrained(llm)
    tokenizer.model_max_length = TEXT_LEN
    tokenizer.padding_side = "right"  # as CLIP's: caption first, padding after
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(seed)
    encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=2 * TEXT_WIDTH, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=TEXT_LEN, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    if out.exists():
        shutil.rmtree(out)
    encoder.save_pretrained(out / "text_encoder")
    tokenizer.save_pretrained(out / "tokenizer")
    return out


def check_decoder(decoder: Path, captions: list[str]) -> dict[str, int]:
    """Loads the folder as the caption cache does; counts the captions, their distinct token sequences at 77
    positions, and those the 77 positions truncate."""
    from skillgpt.generation.caption_cache import load_text_encoder

    _, tokenizer = load_text_encoder(decoder, "image")
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True)["input_ids"]
    full = tokenizer(captions, truncation=False)["input_ids"]
    return {"captions": len(captions), "distinct_sequences": len({tuple(i) for i in ids}),
            "truncated": sum(len(i) > tokenizer.model_max_length for i in full),
            "longest_tokens": max(len(i) for i in full), "model_max_length": tokenizer.model_max_length}


def heldout(recipe: Path) -> Path:
    """tx_heldout.json: the test split's tx samples whose caption is no training caption, one per caption."""
    train = {s["generate"]["caption"] for s in json.loads((recipe / "tx_train.json").read_text())}
    seen: set[str] = set()
    kept = []
    for s in json.loads((recipe / "tx_test.json").read_text()):
        caption = s["generate"]["caption"]
        if caption not in train and caption not in seen:
            seen.add(caption)
            kept.append(s)
    path = recipe / "tx_heldout.json"
    path.write_text(json.dumps(kept, indent=1) + "\n")
    return path


def loss_summary(run_dir: Path) -> dict[str, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r and r.get("loss") is not None]
    epochs = sorted({r["epoch"] for r in steps})
    mean = lambda e: sum(r["loss"] for r in steps if r["epoch"] == e) / sum(r["epoch"] == e for r in steps)  # noqa: E731
    return {"steps": len(steps), "epochs": len(epochs), "first_step": steps[0]["loss"], "last_step": steps[-1]["loss"],
            "first_epoch_mean": mean(epochs[0]), "last_epoch_mean": mean(epochs[-1]),
            "train_seconds": round(sum(r.get("seconds", 0.0) for r in steps), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "out" / "nextgpt_recipe")
    ap.add_argument("--data", type=Path, default=None, help="an existing synthetic set (default: made in WORK/data)")
    ap.add_argument("--llm", type=Path, default=None, help="an existing tiny LLM (default: made in WORK/tiny-llm)")
    ap.add_argument("--stage1", nargs="*", default=[], help="extra key=value settings of stage 1")
    ap.add_argument("--stage2", nargs="*", default=[], help="extra key=value settings of stage 2")
    ap.add_argument("--skip-stage1", action="store_true", help="reuse WORK/stage_1 when it is there")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    start = tic = time.time()

    def lap(name: str) -> None:
        nonlocal tic
        times[name] = round(time.time() - tic, 1)
        tic = time.time()

    data = (args.data or work / "data").resolve()
    if not (data / "captions_train.json").is_file():
        skillgpt("make-sample-data", "--out", str(data))
    llm = (args.llm or work / "tiny-llm").resolve()
    if not (llm / "config.json").is_file():
        skillgpt("make-tiny-llm", "--data", str(data), "--out", str(llm))
    lap("data_and_llm")

    recipe, decoder, cache = work / "recipe", work / "decoder", work / "captions" / "image"
    subprocess.run([sys.executable, "-m", "skillgpt.generation.recipe_data", "--data", str(data), "--out", str(recipe)],
                   check=True, cwd=REPO)
    held = heldout(recipe)
    make_standin_decoder(llm, decoder)
    every = [s["generate"]["caption"] for split in ("train", "val", "test")
             for s in json.loads((recipe / f"tx_{split}.json").read_text())]
    tokens = check_decoder(decoder, list(dict.fromkeys(every)))
    print(f"stand-in decoder: {tokens}", flush=True)
    if cache.exists():
        shutil.rmtree(cache)
    for split in ("train", "val", "test"):
        skillgpt("cache-caption-embeddings", "--data", str(recipe / f"tx_{split}.json"), "--decoder", str(decoder),
                 "--modality", "image", "--out", str(cache), "--device", "cpu")
    lap("recipe_data_decoder_cache")

    common = [f"model.llm.path={llm}"]
    if not (args.skip_stage1 and (work / "stage_1").is_dir()):
        shutil.rmtree(work / "stage_1", ignore_errors=True)
        skillgpt("train", "config/nextgpt/stage_1.yaml", *common, f"data.train={data}/captions_train.json",
                 f"data.val={data}/captions_val.json", f"train.output_dir={work}/stage_1", *args.stage1)
    lap("stage_1")
    shutil.rmtree(work / "stage_2", ignore_errors=True)
    skillgpt("train", "config/nextgpt/stage_2.yaml", *common, f"data.train={recipe}/tx_train.json",
             f"data.val={recipe}/tx_val.json", f"data.test={recipe}/tx_test.json", f"data.caption_cache.image={cache}",
             f"train.init_from={work}/stage_1", f"train.output_dir={work}/stage_2", *args.stage2)
    lap("stage_2")
    out = work / "eval_heldout"
    shutil.rmtree(out, ignore_errors=True)
    skillgpt("eval", "--ckpt", str(work / "stage_2"), "--split", "test", "--out", str(out), f"data.test={held}")
    lap("eval")

    results = json.loads((out / "results.json").read_text())
    image = results["summary"]["per_modality"]["image"]
    summary = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "stand_in_tokens": tokens,
               "stage_2_loss": loss_summary(work / "stage_2"), "heldout": image,
               "stage1_overrides": args.stage1, "stage2_overrides": args.stage2,
               "seconds": {**times, "total": round(time.time() - start, 1)}}
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    loss = summary["stage_2_loss"]
    print(f"\nstage-2 loss (CE + l2): first step {loss['first_step']:.4f} -> last step {loss['last_step']:.4f}; "
          f"epoch mean {loss['first_epoch_mean']:.4f} (first) -> {loss['last_epoch_mean']:.4f} (last, "
          f"{loss['epochs']} epochs, {loss['steps']} steps)")
    print(f"held-out ({image['n']} samples, {image['captions']} distinct captions not in train): l2 loss "
          f"{image['l2_loss']:.4f}, retrieval top-1 {image['retrieval_top1']:.3f} (chance {image['chance']:.3f}), "
          f"signal-token acc {image['signal_token_acc']:.3f}  [skillgpt eval: {out / 'results.json'}]")
    print(f"wall time: {summary['seconds']}")


if __name__ == "__main__":
    main()
