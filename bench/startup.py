"""Start-up of `skillgpt` commands: seconds from launch to the first output line and to process exit.

    python bench/startup.py [--ckpt ckpt/tiny/stage_2] [--clip data/synthetic/videos/test/syn0_test_0000.mp4] [--runs 3]

Runs each command --runs times as its own process (the way a user or a shell loop runs it) and prints a
markdown table of the median and best times, plus the import floor: a bare interpreter that imports
torch, then torch + transformers' Llama and generation modules (what any LLM answer needs), then peft.
Needs a trained checkpoint (scripts/quickstart.sh writes ckpt/tiny/stage_2). The 1-minute load average
is printed with the table: compare figures only at similar load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

QUESTION = "What is the proficiency level of this athlete?"
FLOOR = {
    "import torch": "import torch",
    "+ transformers (Llama, generation)": "import torch; from transformers import LlamaForCausalLM, AutoTokenizer; "
                                          "import transformers.generation.utils",
    "+ peft": "import torch; from transformers import LlamaForCausalLM, AutoTokenizer; "
              "import transformers.generation.utils; import peft",
}


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds to the first stdout or stderr line, seconds to exit, that line)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    first = time.perf_counter() - start
    proc.communicate()
    return first, time.perf_counter() - start, line.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="ckpt/tiny/stage_2")
    ap.add_argument("--clip", default="data/synthetic/videos/test/syn0_test_0000.mp4")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cli = [sys.executable, "-m", "skillgpt.cli"]
    commands = {
        "`skillgpt --help`": [*cli, "--help"],
        "`infer` with a missing --ckpt": [*cli, "infer", "--ckpt", "/no/such/run", "--video", args.clip, QUESTION],
        "`infer` with a missing --video": [*cli, "infer", "--ckpt", args.ckpt, "--video", "/no/such.mp4", QUESTION],
        "`train` with a config typo": [*cli, "train", "config/stage_2.yaml", "preset=tiny", "train.learning_rate=1"],
        "`infer` answer (tiny preset, one clip)": [*cli, "infer", "--ckpt", args.ckpt, "--video", args.clip, QUESTION],
    }
    no_bnb = "import sys; sys.modules['bitsandbytes'] = None; "  # as the skillgpt command runs
    for name, code in FLOOR.items():
        commands[f"import floor: {name}"] = [sys.executable, "-c", no_bnb + code + "; print('ready', flush=True)"]
    print(f"load average before: {os.getloadavg()[0]:.2f}; runs per command: {args.runs}")
    print("| command | first line: median / best | exit: median / best | first line printed |")
    print("|---|---|---|---|")
    for name, cmd in commands.items():
        runs = [timed(cmd) for _ in range(args.runs)]
        firsts, exits = [r[0] for r in runs], [r[1] for r in runs]
        print(f"| {name} | {statistics.median(firsts):.2f} s / {min(firsts):.2f} s | "
              f"{statistics.median(exits):.2f} s / {min(exits):.2f} s | {runs[-1][2][:60]} |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
