"""Throughput of `skillgpt eval` (proficiency, generation on) on a trained checkpoint.

    python bench/eval_throughput.py [--ckpt ckpt/tiny/stage_2] [--split test] [--limit N] [--runs 3]

Runs `skillgpt.eval.run.evaluate` --runs times (the first is a warm-up) and prints, as `RESULT` lines,
samples/s of the eval loop (the run's wall time minus the checkpoint load, measured separately as a
`SkillAssistant` construction) and the frozen encoder's passes per sample (rows through
`SkillGPT.encode`, counted by a wrapper). Uses only interfaces that exist before and after the
encode-once change, so the same command measures both. Results land in bench/out/eval_throughput.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from skillgpt.eval.run import evaluate
from skillgpt.inference.assistant import SkillAssistant
from skillgpt.models.skill_model import SkillGPT


def _counting_encoder(rows: list[int]) -> Any:
    original = SkillGPT.encode

    def encode(self: SkillGPT, kind: str, pixels: Any) -> Any:
        rows.append(int(pixels.shape[0]))
        return original(self, kind, pixels)

    return original, encode


def measure(ckpt: str, split: str, limit: int | None, runs: int, device: str | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    SkillAssistant(ckpt, device=device)
    load_s = time.perf_counter() - t0
    rows: list[int] = []
    original, counting = _counting_encoder(rows)
    SkillGPT.encode = counting  # type: ignore[method-assign]
    walls, n = [], 0
    try:
        with tempfile.TemporaryDirectory() as out:
            for _ in range(runs):
                rows.clear()
                t0 = time.perf_counter()
                summary = evaluate(ckpt, split=split, out_dir=out, limit=limit, generate=True)
                walls.append(time.perf_counter() - t0)
                n = int(summary["n"])
    finally:
        SkillGPT.encode = original  # type: ignore[method-assign]
    loop_s = max(statistics.median(walls[1:] or walls) - load_s, 1e-9)
    return {"ckpt": ckpt, "split": split, "samples": n, "runs": runs, "load_s": round(load_s, 3),
            "eval_wall_s": [round(w, 3) for w in walls], "samples_per_s": round(n / loop_s, 3),
            "encoder_rows_per_sample": round(sum(rows) / max(n, 1), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="ckpt/tiny/stage_2")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    result = measure(args.ckpt, args.split, args.limit, args.runs, args.device)
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval_throughput.json").write_text(json.dumps(result, indent=2))
    print(f"RESULT eval samples/s (generation on, {result['samples']} samples): {result['samples_per_s']}")
    print(f"RESULT encoder passes per sample: {result['encoder_rows_per_sample']}")


if __name__ == "__main__":
    main()
