"""Frame sampling: SkillGPT's `load_video` (decodes only the sampled frames) vs decoding every frame.

    python bench/frame_sampling.py [--seconds 60] [--gops 30,250] [--repeats 5] [--out bench/out/frame_sampling]

Writes a test video per GOP length with PyAV (640x360, 30 fps, H.264 via libx264, a panning textured
background with a moving square, so the encoder has real motion and texture to code), then times, for a
few clip samplers:

- SkillGPT: `skillgpt.data.video.load_video` (PyAV: seeks to a sampled frame's keyframe only when it is
  ahead of the read position, skips non-reference frames it does not need; frames bit-identical to decord
  `get_batch`; then the reference's float32 bilinear resize without antialias, `preprocess`);
- reference A: decord, every frame read in order (`next()`: decoded and converted to RGB), then subsampled
  (decord's `skip_frames` is no reference: it seeks to the last keyframe it passes, so it does not decode
  every frame);
- reference B: PyAV, every frame decoded in order, the wanted ones converted to RGB, then subsampled.

All use one decoding thread and the same frame indices (`sample_frame_indices`). SkillGPT and the two
references end with the same `preprocess` as `load_video` and are checked equal, so only the decoding
strategy differs between them. The
"keyframe bound" is the limit for a decoder that decodes every frame from each sampled frame's preceding
keyframe up to it (decoding-only speed-up <= all frames / those); the "reference bound" counts, in decode
order from that keyframe to the sampled frame, only reference frames (those a decoder with
`skip_frame=NONREF` decodes) plus the sampled frame. The preprocessing alone (on already decoded frames)
is timed too, so the table also gives the decoding-only speed-up, next to the preprocessing `load_video` had
before it matched the reference (issue 16: uint8 antialiased long-side resize, float32 short side;
`previous_preprocess`, kept here only to time it and measure how far its pixels were). Runs are interleaved
(SkillGPT, A, B, preprocessing, previous preprocessing, SkillGPT, ...) so load from other processes hits all of them; medians are
reported, of wall time and of process CPU time (all threads). Useful fps = sampled frames delivered per
second. Torch runs on 1 thread. Also prints what a seek, a decoded packet and a keyframe cost (PyAV, CPU
time), the cost model behind `load_video`'s rule (seek when the next needed keyframe is ahead, else decode
on). Prints a markdown table, writes results.json.
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

from skillgpt.config.schema import VideoConfig
from skillgpt.data.video import crop_offsets, load_video, preprocess, sample_frame_indices

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


def must_decode_refs(path: Path, keys: list[int], wanted: list[int]) -> int:
    """As `must_decode`, in decode order, counting only reference frames (kept by `skip_frame=NONREF`) + `wanted`."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        packets = [p.pts for p in container.demux(stream) if p.size]
        rank = {t: i for i, t in enumerate(sorted(packets))}
        container.seek(0, stream=stream)
        stream.codec_context.skip_frame = "NONREF"
        refs = {rank[f.pts] for f in container.decode(stream)}
    position = {rank[t]: d for d, t in enumerate(packets)}
    decode_order = [rank[t] for t in packets]
    covered: set[int] = set(wanted)
    for w in wanted:
        key = max(k for k in keys if k <= w)
        covered.update(i for i in decode_order[position[key]: position[w] + 1] if i in refs)
    return len(covered)


def seek_vs_decode(path: Path, repeats: int = 3) -> dict[str, float]:
    """PyAV, 1 thread, CPU ms: a seek to a keyframe (+ decoder flush, + reading its packet) vs one packet decoded
    (every frame, or non-reference frames skipped) vs one keyframe (only keyframes decoded, demuxing included)."""
    out: dict[str, float] = {}
    for skip in ("DEFAULT", "NONREF", "NONKEY"):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            stream.codec_context.skip_frame = skip
            packets = list(container.demux(stream))
            keys = [p.pts for p in packets if p.size and p.is_keyframe]
            tic = time.process_time()
            for packet in packets:
                stream.codec_context.decode(packet)
            per = len(keys) if skip == "NONKEY" else len(packets)
            out[f"decode_{skip.lower()}_ms"] = (time.process_time() - tic) / per * 1e3
            if skip == "DEFAULT":
                tic = time.process_time()
                for _ in range(repeats):
                    for key in keys:
                        container.seek(key, stream=stream, backward=True)  # flushes the (open) decoder
                        next(container.demux(stream))
                out["seek_ms"] = (time.process_time() - tic) / (repeats * len(keys)) * 1e3
    return out


def sampled(reader: decord.VideoReader, cfg: VideoConfig) -> tuple[list[list[int]], list[int]]:
    clips = sample_frame_indices(len(reader), float(reader.get_avg_fps()), cfg)
    return clips, sorted({i for c in clips for i in c})


def previous_preprocess(frames: torch.Tensor, clips: list[list[int]], wanted: list[int], cfg: VideoConfig) -> torch.Tensor:
    """`load_video`'s resize before issue 16 (not the reference): long side antialiased in uint8, cropped to
    what the crops use, short side antialiased in float32, normalised. Kept only to time it."""
    size = cfg.resolution
    x = frames.permute(0, 3, 1, 2)
    height, width = x.shape[-2:]
    long = int(size * max(height, width) / min(height, width))
    new_h, new_w = (long, size) if width <= height else (size, long)
    offsets = crop_offsets(new_h, new_w, size, cfg.num_crops)
    wide = width > height
    lo, hi = min(o[wide] for o in offsets), max(o[wide] for o in offsets) + size
    x = torch.nn.functional.interpolate(x, size=(height, new_w) if wide else (new_h, width), mode="bilinear", antialias=True)
    x = x.narrow(-1 if wide else -2, lo, hi - lo).float()
    x = torch.nn.functional.interpolate(x, size=(new_h, hi - lo) if wide else (hi - lo, new_w), mode="bilinear",
                                        antialias=True)
    offsets = [(t, l - lo) if wide else (t - lo, l) for t, l in offsets]
    std = torch.tensor(cfg.std).view(3, 1, 1)
    x = (x / 255.0 - torch.tensor(cfg.mean).view(3, 1, 1)) / std
    position = {frame: row for row, frame in enumerate(wanted)}
    return torch.stack([x[[position[i] for i in clip]][..., t:t + size, l:l + size].permute(1, 0, 2, 3)
                        for clip in clips for t, l in offsets])


def decord_all(path: Path, cfg: VideoConfig) -> torch.Tensor:
    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    clips, wanted = sampled(reader, cfg)
    want, kept = set(wanted), []
    for i in range(len(reader)):
        frame = reader.next()
        if i in want:
            kept.append(frame.asnumpy())
    return preprocess(torch.from_numpy(np.stack(kept)), clips, wanted, cfg)


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
    return preprocess(torch.from_numpy(np.stack(kept)), clips, wanted, cfg)


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
    rows, costs, load_before = [], {}, os.getloadavg()[0]
    for gop in [int(g) for g in args.gops.split(",")]:
        path = out / f"test_{args.seconds}s_gop{gop}.mp4"
        if not path.is_file():
            tic = time.perf_counter()
            write_video(path, args.seconds, gop)
            print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - tic:.1f} s")
        costs[gop] = seek_vs_decode(path)
        for label, cfg in SAMPLERS.items():
            ref = load_video(path, cfg)
            for name, fn in METHODS.items():  # same tensor from every method, else the timing is meaningless
                assert torch.equal(fn(path, cfg), ref), f"{name} disagrees with load_video"
            reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            clips, wanted = sampled(reader, cfg)
            decoded = torch.from_numpy(reader.get_batch(wanted).asnumpy())
            keys = [int(k) for k in reader.get_key_indices()]
            total, needed = len(reader), must_decode(keys, wanted)
            needed_refs = must_decode_refs(path, keys, wanted)
            keyframes = len({max(k for k in keys if k <= w) for w in wanted})
            del reader
            runs = {**METHODS, "preprocess": lambda p, c: preprocess(decoded, clips, wanted, c),
                    "preprocess_previous": lambda p, c: previous_preprocess(decoded, clips, wanted, c)}
            previous_diff = (previous_preprocess(decoded, clips, wanted, cfg) - ref).abs().max().item()
            times: dict[str, list[float]] = {n: [] for n in runs}
            cpu: dict[str, list[float]] = {n: [] for n in runs}
            for _ in range(args.repeats):
                for name, fn in runs.items():
                    tic, cpu_tic = time.perf_counter(), time.process_time()
                    fn(path, cfg)
                    times[name].append(time.perf_counter() - tic)
                    cpu[name].append(time.process_time() - cpu_tic)
            med = {n: statistics.median(t) for n, t in times.items()}
            med_cpu = {n: statistics.median(t) for n, t in cpu.items()}
            dec = {n: med[n] - med["preprocess"] for n in ("skillgpt", "decord_all", "pyav_all")}  # decoding only
            n_frames = len(wanted)
            rows.append({"gop": gop, "sampler": label, "frames": n_frames, "must_decode": needed,
                         "must_decode_refs": needed_refs, "total_frames": total, "decode_bound": total / needed,
                         "keyframes": keyframes, "total_keyframes": len(keys), "previous_max_diff": previous_diff,
                         "decode_bound_refs": total / needed_refs, "mib": path.stat().st_size / 2**20,
                         "times": times, "cpu_times": cpu, **{f"{n}_s": med[n] for n in runs},
                         **{f"{n}_cpu_s": med_cpu[n] for n in runs},
                         **{f"{n}_fps": n_frames / med[n] for n in METHODS},
                         **{f"speedup_vs_{n}": med[n] / med["skillgpt"] for n in METHODS if n != "skillgpt"},
                         **{f"cpu_speedup_vs_{n}": med_cpu[n] / med_cpu["skillgpt"] for n in METHODS if n != "skillgpt"},
                         "decode_speedup_vs_decord": dec["decord_all"] / dec["skillgpt"],
                         "decode_speedup_vs_pyav": dec["pyav_all"] / dec["skillgpt"]})
    (out / "results.json").write_text(json.dumps({"rows": rows, "seek_vs_decode": costs}, indent=2))
    for gop, c in costs.items():
        print(f"GOP {gop}: a seek (+ flush, + reading the keyframe's packet) costs {c['seek_ms']:.3f} ms CPU; decoding "
              f"costs {c['decode_default_ms']:.3f} ms per packet (every frame), {c['decode_nonref_ms']:.3f} ms per "
              f"packet with non-reference frames skipped, {c['decode_nonkey_ms']:.2f} ms per keyframe")
    print(f"\n{args.seconds} s 640x360 30 fps H.264 video, 1 decoding thread, 1 torch thread, median of {args.repeats}, "
          f"1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| GOP (file) | sampler (frames kept) | SkillGPT `load_video` (s) "
          "| decord, all frames (s) | PyAV, all frames (s) | preprocessing: reference / previous (s); previous max diff "
          "| useful fps: SkillGPT / decord / PyAV | speed-up vs decord / PyAV "
          "| same, CPU time | decoding only: vs decord / PyAV "
          "| frames to decode at least: keyframe bound / reference bound (keyframes among them) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['gop']} ({r['mib']:.1f} MiB) | {r['sampler']} ({r['frames']}) | {r['skillgpt_s']:.3f} "
              f"| {r['decord_all_s']:.3f} | {r['pyav_all_s']:.3f} "
              f"| {r['preprocess_s']:.3f} / {r['preprocess_previous_s']:.3f}; {r['previous_max_diff']:.2f} "
              f"| {r['skillgpt_fps']:.0f} / {r['decord_all_fps']:.1f} / {r['pyav_all_fps']:.1f} "
              f"| {r['speedup_vs_decord_all']:.1f}x / {r['speedup_vs_pyav_all']:.1f}x "
              f"| {r['cpu_speedup_vs_decord_all']:.1f}x / {r['cpu_speedup_vs_pyav_all']:.1f}x "
              f"| {r['decode_speedup_vs_decord']:.1f}x / {r['decode_speedup_vs_pyav']:.1f}x "
              f"| {r['must_decode']} ({r['decode_bound']:.1f}x) / {r['must_decode_refs']} ({r['decode_bound_refs']:.1f}x) "
              f"of {r['total_frames']} ({r['keyframes']} of {r['total_keyframes']}) |")


if __name__ == "__main__":
    main()
