"""Stage-2 epoch time with cached encoder features vs online encoding, same data, same run.

    python bench/feature_cache.py [--per-level 4] [--out bench/out/feature_cache]

For each encoder shape (the tiny preset's, and a ViT-B-sized ImageBind vision tower) it trains one
stage-2 epoch online, fills the cache with `skillgpt cache-features`, then trains the same epoch from
the cache (`data.feature_cache_mode=require`, so it cannot silently fall back). Epoch time is the sum of
the per-step `seconds` in metrics.jsonl (model building and DeepSpeed start-up excluded on both sides).
Prints a markdown table for bench/RESULTS.md and writes results.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from skillgpt.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    "tiny preset (64 wide, 2 layers, 56 px)": [],
    "ViT-B-sized ImageBind (768 wide, 12 layers, 224 px)": [
        "model.encoder.vision_width=768", "model.encoder.vision_layers=12", "model.encoder.vision_heads=12",
        "model.encoder.image_size=224", "model.encoder.out_dim=512", "data.video.resolution=224",
    ],
}


def _epoch_seconds(run_dir: Path) -> float:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return sum(json.loads(ln)["seconds"] for ln in lines if ln)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-level", type=int, default=4, help="training videos per level and scenario")
    ap.add_argument("--out", default="bench/out/feature_cache")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    data, llm = out / "data", out / "tiny-llm"
    if not (data / "skill_train.json").is_file():
        assert cli(["make-sample-data", "--out", str(data), "--per-level", f"train={args.per_level},val=1,test=1"]) == 0
    if not (llm / "config.json").is_file():
        assert cli(["make-tiny-llm", "--data", str(data), "--out", str(llm), "--pretrain-steps", "0"]) == 0
    stage_2 = str(REPO / "config" / "stage_2.yaml")
    rows = []
    for shape, extra in SHAPES.items():
        tag = "large" if extra else "tiny"
        common = ["preset=tiny", f"model.llm.path={llm}", f"data.train={data}/skill_train.json",
                  f"data.val={data}/skill_val.json", f"data.test={data}/skill_test.json", "train.init_from=null",
                  f"train.deepspeed_config={REPO}/dsconfig/stage_2.json", "train.epochs=1",
                  "data.cache_videos=false", "train.resume=false", *extra]
        online_dir = out / tag / "online"
        assert cli(["train", stage_2, *common, f"train.output_dir={online_dir}"]) == 0
        cache = f"data.feature_cache={out / tag / 'cache'}"
        tic = time.perf_counter()
        assert cli(["cache-features", "--config", stage_2, "--splits", "train", *common, cache]) == 0
        fill = time.perf_counter() - tic
        cached_dir = out / tag / "cached"
        assert cli(["train", stage_2, *common, cache, "data.feature_cache_mode=require",
                    f"train.output_dir={cached_dir}"]) == 0
        online, cached = _epoch_seconds(online_dir), _epoch_seconds(cached_dir)
        rows.append({"shape": shape, "online_epoch_s": round(online, 2), "cached_epoch_s": round(cached, 2),
                     "speedup": round(online / cached, 1), "cache_fill_s": round(fill, 1)})
    n = len(json.loads((data / "skill_train.json").read_text()))
    info = {"samples": n, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "rows": rows}
    (out / "results.json").write_text(json.dumps(info, indent=2))
    print(f"\nstage-2 epoch over {n} training samples ({info['threads']} threads, "
          f"{info['cuda'] or 'CPU'})\n")
    print("| encoder shape | online epoch (s) | cached epoch (s) | speed-up | one-off cache fill (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['shape']} | {r['online_epoch_s']} | {r['cached_epoch_s']} | {r['speedup']}x | {r['cache_fill_s']} |")


if __name__ == "__main__":
    main()
