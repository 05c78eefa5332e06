"""Data of the NExT-GPT recipe (config/nextgpt/) from the synthetic set (`skillgpt make-sample-data`).

- ``tx_<split>.json`` (stage 2, text -> X): one sample per caption of ``captions_<split>.json``: the caption
  asked for as the modality, answered with its signal tokens only::

    {"id": "tx-syn0_train_0000", "generate": {"modality": "image", "caption": "A basketball is pushed ..."},
     "conversations": [{"from": "human", "value": "Show the movement: A basketball is pushed ..."},
                       {"from": "gpt", "value": "[IMG0][IMG1][IMG2][IMG3]"}]}

- ``instruct_<split>.json`` (stage 3, instruction tuning): the split's skill Q&A samples (ordinary text answers
  about a video, as they are) interleaved with the same text -> X requests answered in words that end in the
  signal tokens ("Here is the movement. [IMG0]...").

The captions describe the movement and its flaws, never the proficiency level: the level stays something the
model can only read from the motion (no static cue, neither in the videos nor in these prompts). Written next to
the source files unless --out says otherwise (media paths are rewritten to stay valid from there).

usage: python -m skillgpt.generation.recipe_data --data data/synthetic [--out DIR] [--modality image] [--tokens 4]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from skillgpt.data.dataset import read_samples
from skillgpt.models.signal_tokens import signal_token_names

SPLITS = ("train", "val", "test")
ASK = {"image": "Show the movement: {caption}", "video": "Make a video of this: {caption}",
       "audio": "Make the sound of this: {caption}"}
REPLY = {"image": "Here is the movement.", "video": "Here is the video.", "audio": "Here is the sound."}


def tx_samples(captions: list[dict[str, Any]], modality: str, tokens: int, reply: bool = False) -> list[dict[str, Any]]:
    """Text -> X samples of caption records (``{"id", "caption", ...}``): the answer is the signal tokens, after a
    short sentence with `reply` (stage 3). Only the caption is kept: no media, no label."""
    signal = "".join(signal_token_names({modality: tokens})[modality])
    out = []
    for i, rec in enumerate(captions):
        caption = str(rec["caption"])
        answer = f"{REPLY[modality]} {signal}" if reply else signal
        out.append({"id": f"tx-{rec.get('id', i)}", "generate": {"modality": modality, "caption": caption},
                    "conversations": [{"from": "human", "value": ASK[modality].format(caption=caption)},
                                      {"from": "gpt", "value": answer}]})
    return out


def interleave(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """a[0], b[0], a[1], b[1], ... then the rest of the longer list."""
    out = [x for pair in zip(a, b) for x in pair]
    return out + a[len(b):] + b[len(a):]


def _moved(sample: dict[str, Any], data: Path, out: Path) -> dict[str, Any]:
    """`sample` with its relative media paths (video / image / audio, a path or {view: path}) seen from `out`."""
    def rel(p: str) -> str:
        return p if os.path.isabs(p) else os.path.relpath(data / p, out)

    moved = dict(sample)
    for key in ("video", "image", "audio"):
        value = sample.get(key)
        if isinstance(value, str):
            moved[key] = rel(value)
        elif isinstance(value, dict):
            moved[key] = {k: rel(v) if isinstance(v, str) else v for k, v in value.items()}
    return moved


def write_recipe_data(data: Path, modality: str = "image", tokens: int = 4, out: Path | None = None) -> list[Path]:
    """Write tx_<split>.json and instruct_<split>.json from the synthetic set's files in `data` into `out`
    (default: `data`)."""
    out = Path(out) if out is not None else Path(data)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for split in SPLITS:
        captions_file, skill_file = data / f"captions_{split}.json", data / f"skill_{split}.json"
        if not captions_file.is_file():
            continue
        captions = read_samples(captions_file)
        skill = [_moved(s, data, out) for s in read_samples(skill_file)] if skill_file.is_file() else []
        for name, samples in ((f"tx_{split}.json", tx_samples(captions, modality, tokens)),
                              (f"instruct_{split}.json", interleave(skill, tx_samples(captions, modality, tokens, True)))):
            (out / name).write_text(json.dumps(samples, indent=1) + "\n", encoding="utf-8")
            written.append(out / name)
    if not written:
        raise FileNotFoundError(f"{data}: no captions_<split>.json (make it with skillgpt make-sample-data)")
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/synthetic"), help="folder of skillgpt make-sample-data")
    ap.add_argument("--out", type=Path, default=None, help="where the files go (default: --data)")
    ap.add_argument("--modality", default="image", choices=sorted(ASK))
    ap.add_argument("--tokens", type=int, default=4, help="signal tokens of the modality (model.generation.*_tokens)")
    args = ap.parse_args(argv)
    for path in write_recipe_data(args.data, args.modality, args.tokens, args.out):
        print(f"{path}: {len(json.loads(path.read_text()))} samples")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
