"""Can a recipe's frozen encoder see the flaw types at all? A per-beat linear probe on its features.

    python bench/flaw_probe.py [--data data/synthetic] [--set model.encoder.pool=1 ...] [--limit 400]

Each synthetic video has 8 beats, each clean or lost as a hold (hesitation), a slip back (stumble) or an
extra loop (rush). For a preset (default: tiny-feedback) this script encodes every video of the
train/val/test skill files with the preset's frozen encoder, cuts the visual tokens into beats (the token
groups whose clips start inside the beat) and fits a linear classifier of the beat's type on the train
split, then reports per-beat accuracy and the video-level flaw-mix exact match it implies (all 8 beats
right) on val and test. Two references run on the same beats: the encoder's features with one repeated
frame per clip (motion-free: must stay near chance) and raw pixels of the same frames (what the frames
hold, before the encoder). A recipe cannot count flaws that its encoder's features do not separate.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from skillgpt.config import load_config
from skillgpt.data.media import load_media, sample_media
from skillgpt.models.build import _encoders

REPO = Path(__file__).resolve().parents[1]
TYPES = ["clean", "hesitation", "stumble", "rush"]


def beat_labels(sample: dict) -> list[int]:
    """The type index of each of the sample's beats."""
    labels = [0] * int(sample["beats"])
    for flaw in sample["flaws"]:
        labels[flaw["beat"]] = TYPES.index(flaw["type"])
    return labels


def clip_starts(num_clips: int, clip_s: float, duration: float) -> list[float]:
    """Start times of the clip sampler (clips spread evenly over the video)."""
    step = (duration - clip_s) / (num_clips - 1) if num_clips > 1 else 0.0
    return [i * step for i in range(num_clips)]


def encode_split(path: Path, cfg, encoder, still: bool, limit: int) -> tuple[list, list, list]:
    """Per video: encoder tokens [groups, tokens_per_group * D], raw pixels [groups, C*T*H*W], beat labels."""
    samples = json.loads(path.read_text())[:limit]
    feats, pixels, labels = [], [], []
    for s in tqdm(samples, desc=f"encode {path.name}{' (still)' if still else ''}", leave=False):
        (item,) = sample_media({"video": s["video"]}, path.parent, cfg.data, s["id"])
        x = load_media(item, cfg.data)  # [S, C, T, H, W]
        if still:
            x = x[:, :, :1].expand_as(x).contiguous()
        with torch.no_grad():
            tokens = encoder(x.unsqueeze(0))[0]  # [S * per_clip, D]
        feats.append(tokens.reshape(x.shape[0], -1))
        pixels.append(torch.nn.functional.avg_pool3d(x, (1, 4, 4)).reshape(x.shape[0], -1))
        labels.append(beat_labels(s))
    return feats, pixels, labels


def per_beat(rows: list, labels: list, starts: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack, for every beat of every video, the rows of the clips that start inside that beat."""
    xs, ys = [], []
    for row, beat_types in zip(rows, labels):
        for b, y in enumerate(beat_types):
            idx = [i for i, t in enumerate(starts) if b <= t + 1e-6 < b + 1]
            xs.append(row[idx].reshape(-1))
            ys.append(y)
    return torch.stack(xs), torch.tensor(ys)


def fit_probe(x: torch.Tensor, y: torch.Tensor, kind: str = "linear", steps: int = 500) -> torch.nn.Module:
    """On standardised features, full-batch Adam with L2: a multinomial logistic regression (`linear`) or a
    one-hidden-layer MLP (`mlp`, 256 GELU units: a nonlinear reader, as the projector + LLM are)."""
    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0) + 1e-6
    if kind == "linear":
        probe = torch.nn.Sequential(torch.nn.Linear(x.shape[1], len(TYPES)))
    else:
        probe = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.GELU(), torch.nn.Dropout(0.3),
                                    torch.nn.Linear(256, len(TYPES)))
    probe.train()
    opt = torch.optim.Adam(probe.parameters(), lr=1e-2, weight_decay=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(probe((x - mean) / std), y).backward()
        opt.step()
    probe.eval()
    return lambda z: probe((z - mean) / std)  # type: ignore[return-value]


def scores(probe, x: torch.Tensor, y: torch.Tensor, beats: int) -> tuple[float, float]:
    """(per-beat accuracy, flaw-mix exact match per video: counts of each type right)."""
    with torch.no_grad():
        pred = probe(x).argmax(-1)
    videos = len(y) // beats
    exact = sum(Counter(pred[v * beats:(v + 1) * beats].tolist()) == Counter(y[v * beats:(v + 1) * beats].tolist())
                for v in range(videos))
    return (pred == y).float().mean().item(), exact / videos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/synthetic")
    ap.add_argument("--preset", default="tiny-feedback")
    ap.add_argument("--set", nargs="*", default=[], help="key=value overrides of the preset")
    ap.add_argument("--probe", choices=("linear", "mlp"), default="linear", help="the beat classifier")
    ap.add_argument("--limit", type=int, default=400, help="videos per split")
    ap.add_argument("--duration", type=float, default=9.0, help="video length in seconds (the synthetic set: 9)")
    args = ap.parse_args()
    data = Path(args.data)
    cfg = load_config(REPO / "config" / "stage_2.yaml", [f"preset={args.preset}", "train.init_from=null", *args.set])
    encoder = _encoders(cfg, on_meta=False)["video"].eval()
    v = cfg.data.video
    starts = clip_starts(v.num_clips, v.clip_duration, args.duration)
    print(f"preset {args.preset} {' '.join(args.set)}: {v.num_clips} clips x {v.frames_per_clip} frames, "
          f"{v.clip_duration} s each; encoder pool {cfg.model.encoder.pool}; {args.probe} probe")
    results = {}
    for still in (False, True):
        split = {name: encode_split(data / f"skill_{name}.json", cfg, encoder, still, args.limit)
                 for name in ("train", "val", "test")}
        for kind, col in (("encoder", 0), ("pixels", 1)):
            if still and kind == "pixels":
                continue
            xy = {name: per_beat(parts[col], parts[2], starts) for name, parts in split.items()}
            probe = fit_probe(*xy["train"], kind=args.probe)
            for name in ("val", "test"):
                acc, exact = scores(probe, *xy[name], beats=8)
                key = f"{kind}{' motion-free' if still else ''} {name}"
                results[key] = (acc, exact)
                print(f"{key:28s} beat accuracy {acc:.3f}  flaw-mix exact {exact:.3f}", flush=True)


if __name__ == "__main__":
    main()
