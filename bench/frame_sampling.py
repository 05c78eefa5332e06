"""Frame sampling: SkillGPT's `load_video` (decodes only the sampled frames) vs decoding every frame.

    python bench/frame_sampling.py [--seconds 60] [--gops 30,250] [--repeats 5] [--out bench/out/frame_sampling]

Writes a test video per GOP length with PyAV (640x360, 30 fps, H.264 via libx264, a panning textured
background with a moving square, so the encoder has real motion and texture to code), then times, for a
few clip samplers:

- SkillGPT: `skillgpt.data.video.load_video` (decord `get_batch` on the sampled frame indices only);
- reference A: decord, every frame read in order (`next()`: decoded and converted to RGB), then subsampled
  (decord's `skip_frames` is no reference: it skips 1,800 frames in ~40 ms, i.e. it does not decode them);
- reference B: PyAV, every frame decoded in order, the wanted ones converted to RGB, then subsampled.

All three use one decoding thread and the same frame indices (`sample_frame_indices`), and the
references end with the same resize / normalise / centre crop as `load_video`, so only the decoding
strategy differs. The last column is the bound for any decoder that seeks: the frames from each sampled
frame's preceding keyframe up to it must be decoded (H.264 inter frames), so the decoding-only speed-up
over a full decode cannot exceed all frames / those. The preprocessing alone (on already decoded frames) is timed too, so the table also
gives the decoding-only speed-up. Runs are interleaved (SkillGPT, A, B, preprocessing, SkillGPT, ...) so
load from other processes hits all of them; medians are reported. Useful fps = sampled frames delivered
per second. Torch runs on 1 thread. Prints a markdown table, writes results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import av
import decord
import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from skillgpt.config.schema import VideoConfig
from skillgpt.data.video import crop_offsets, load_video, sample_frame_indices

SAMPLERS = {  # label -> VideoConfig
    "5 clips x 2 s x 2 frames (real presets)": VideoConfig(num_clips=5, clip_duration=2.0, frames_per_clip=2),
    "16 clips x 1 s x 2 frames": VideoConfig(num_clips=16, clip_duration=1.0, frames_per_clip=2),
    "16 clips x 1 s x 8 frames": VideoConfig(num_clips=16, clip_duration=1.0, frames_per_clip=8),
}


def write_video(path: Path, seconds: int, gop: int, width: int = 640, height: int = 360, fps: int = 30) -> None:
    """A textured background panning 3 px per frame and a square moving across it."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (height // 8, (width + 3 * fps * seconds) // 8 + 1, 3), dtype=np.uint8)
    texture = np.kron(noise, np.ones((8, 8, 1), dtype=np.uint8))  # 8x8 blocks: compressible, not trivial
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"preset": "veryfast", "crf": "23", "keyint": str(gop), "min-keyint": str(gop),
                          "scenecut": "0"}
        for i in range(seconds * fps):
            frame = texture[:height, 3 * i: 3 * i + width].copy()
            x, y = (7 * i) % (width - 60), int((height - 60) * (0.5 + 0.4 * np.sin(i / 20)))
            frame[y: y + 60, x: x + 60] = (255, 64, 0)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def must_decode(keys: list[int], wanted: list[int]) -> int:
    """Frames any decoder must decode to get `wanted`: from each one's preceding keyframe up to it (union)."""
    covered: set[int] = set()
    for w in wanted:
        covered.update(range(max(k for k in keys if k <= w), w + 1))
    return len(covered)


def preprocess(batch: np.ndarray, clips: list[list[int]], wanted: list[int], cfg: VideoConfig) -> torch.Tensor:
    """`load_video`'s steps after decoding: [F, H, W, 3] uint8 -> [S, 3, T, R, R]."""
    frames = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    frames = TF.resize(frames, [cfg.resolution], interpolation=InterpolationMode.BILINEAR, antialias=True)
    frames = TF.normalize(frames, mean=list(cfg.mean), std=list(cfg.std))
    (top, left), = crop_offsets(*frames.shape[-2:], cfg.resolution, 1)
    pos = {f: r for r, f in enumerate(wanted)}
    return torch.stack([TF.crop(frames[[pos[i] for i in c]], top, left, cfg.resolution, cfg.resolution).permute(1, 0, 2, 3)
                        for c in clips])


def decord_all(path: Path, cfg: VideoConfig) -> torch.Tensor:
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    clips = sample_frame_indices(len(reader), float(reader.get_avg_fps()), cfg)
    wanted = sorted({i for c in clips for i in c})
    want, kept = set(wanted), []
    for i in range(len(reader)):
        frame = reader.next()
        if i in want:
            kept.append(frame.asnumpy())
    return preprocess(np.stack(kept), clips, wanted, cfg)


def pyav_all(path: Path, cfg: VideoConfig) -> torch.Tensor:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        clips = sample_frame_indices(stream.frames, float(stream.average_rate), cfg)
        wanted = sorted({i for c in clips for i in c})
        want, kept = set(wanted), []
        for i, frame in enumerate(container.decode(stream)):
            if i in want:
                kept.append(frame.to_ndarray(format="rgb24"))
    return preprocess(np.stack(kept), clips, wanted, cfg)


METHODS = {"skillgpt": lambda p, c: load_video(p, c, num_threads=1), "decord_all": decord_all, "pyav_all": pyav_all}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=60)
    ap.add_argument("--gops", default="30,250", help="keyframe intervals (frames): 30 = 1 s, 250 = x264's default")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench/out/frame_sampling")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    rows, load_before = [], os.getloadavg()[0]
    for gop in [int(g) for g in args.gops.split(",")]:
        path = out / f"test_{args.seconds}s_gop{gop}.mp4"
        if not path.is_file():
            tic = time.perf_counter()
            write_video(path, args.seconds, gop)
            print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - tic:.1f} s")
        for label, cfg in SAMPLERS.items():
            ref = load_video(path, cfg)
            for name, fn in METHODS.items():  # same tensor from every method, else the timing is meaningless
                assert torch.allclose(fn(path, cfg), ref), f"{name} disagrees with load_video"
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            clips = sample_frame_indices(len(reader), float(reader.get_avg_fps()), cfg)
            wanted = sorted({i for c in clips for i in c})
            decoded = reader.get_batch(wanted).asnumpy()
            total, needed = len(reader), must_decode(list(reader.get_key_indices()), wanted)
            del reader
            runs = {**METHODS, "preprocess": lambda p, c: preprocess(decoded, clips, wanted, c)}
            times: dict[str, list[float]] = {n: [] for n in runs}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    tic = time.perf_counter()
                    fn(path, cfg)
                    times[name].append(time.perf_counter() - tic)
            med = {n: statistics.median(t) for n, t in times.items()}
            dec = {n: med[n] - med["preprocess"] for n in METHODS}  # decoding (+ opening, sampling) only
            n_frames = len(wanted)
            rows.append({"gop": gop, "sampler": label, "frames": n_frames, "must_decode": needed, "total_frames": total,
                         "decode_bound": total / needed, "mib": path.stat().st_size / 2**20,
                         "times": times, **{f"{n}_s": med[n] for n in runs},
                         **{f"{n}_fps": n_frames / med[n] for n in METHODS},
                         "speedup_vs_decord": med["decord_all"] / med["skillgpt"],
                         "speedup_vs_pyav": med["pyav_all"] / med["skillgpt"],
                         "decode_speedup_vs_decord": dec["decord_all"] / dec["skillgpt"],
                         "decode_speedup_vs_pyav": dec["pyav_all"] / dec["skillgpt"]})
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    print(f"\n{args.seconds} s 640x360 30 fps H.264 video, 1 decoding thread, 1 torch thread, median of {args.repeats}, "
          f"1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| GOP (file) | sampler (frames kept) | SkillGPT `load_video` (s) | decord, all frames (s) | PyAV, all frames (s) "
          "| of which preprocessing (s) | useful fps: SkillGPT / decord / PyAV | speed-up vs decord / PyAV "
          "| decoding only: vs decord / PyAV | frames to decode at least (bound) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['gop']} ({r['mib']:.1f} MiB) | {r['sampler']} ({r['frames']}) | {r['skillgpt_s']:.3f} "
              f"| {r['decord_all_s']:.3f} | {r['pyav_all_s']:.3f} | {r['preprocess_s']:.3f} "
              f"| {r['skillgpt_fps']:.0f} / {r['decord_all_fps']:.1f} / {r['pyav_all_fps']:.1f} "
              f"| {r['speedup_vs_decord']:.1f}x / {r['speedup_vs_pyav']:.1f}x "
              f"| {r['decode_speedup_vs_decord']:.1f}x / {r['decode_speedup_vs_pyav']:.1f}x "
              f"| {r['must_decode']} of {r['total_frames']} ({r['decode_bound']:.1f}x) |")

if __name__ == "__main__":
    main()
