"""Deterministic synthetic skill dataset (`skillgpt make-sample-data`).

Each video is a metronome drill of one-second beats. An object follows a periodic path driven by a
phase ``phi(t)``; clean beats advance ``phi`` at the scenario tempo, flawed beats are lost (the
athlete holds, slips back and recovers, or rushes an extra loop) and the loss is never caught up. The proficiency level only sets how many
beats are flawed, so the label lives in the motion alone: every static property (background,
colours, sizes, path amplitude/centre, starting phase) is drawn from a level-independent stream,
and the starting phase is uniform, so any single frame has the same distribution for every level.
Videos are encoded intra-only at a constant quantiser, so each decoded frame depends only on its
own content and not on the motion around it.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import sys
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np
from tqdm import tqdm

from skillgpt.config.schema import PROFICIENCY_LEVELS
from skillgpt.data.synthetic_render import SCENARIOS, render_frames, sample_scene

QUESTION = "<video> What is the proficiency level of this athlete?"
FOLLOW_UP = "What should they improve?"
BEAT_S = 1.0
TEMPO = {"basketball_dribble": 0.25, "gymnastics_swing": 0.25}  # path cycles per second
FLAWED_FRACTION = dict(zip(PROFICIENCY_LEVELS, [0.75, 0.5, 0.25, 0.0]))  # 6/4/2/0 of 8 beats
FLAW_TYPES = ["hesitation", "rush", "stumble"]
# A flawed beat is a lost beat: inside a window covering almost the whole beat the object holds still
# (hesitation), slips back and recovers (stumble) or rushes through one extra loop (rush). Net phase
# advance over the window, in cycles, and the peak slip of a stumble:
FLAW_NET = {"hesitation": 0.0, "rush": 1.0, "stumble": 0.0}
STUMBLE_SLIP = 0.2
# The window spans the beat's first 0.875 s: from the first to the last frame of a one-second clip
# at 8 fps (t = k and k + 0.875 s). Between those two frames a clean beat travels about a quarter
# loop and a lost beat makes no net progress; which kind of loss it was (hold, slip, extra loop)
# needs denser sampling (frames_per_clip >= 4) to see.
FLAW_WINDOW_S = (0.0, 0.875)  # (start in beat, duration)
JITTER = 0.03  # natural per-beat tempo variation, identical for every level
CODEC = {"codec": "libx264", "pix_fmt": "yuv420p", "qp": "18", "keyint": 1, "preset": "veryfast"}
DEFAULT_PER_LEVEL = {"train": 100, "val": 10, "test": 25}

TEXT = {
    "basketball_dribble": {
        "scene": ["A player dribbles a basketball between the hand and the floor",
                  "An athlete runs a basketball dribbling drill to a metronome",
                  "A basketball is pushed to the floor and caught again in a repeated dribble"],
        "names": {"hesitation": ("hesitation", "hesitations"), "rush": ("rushed bounce", "rushed bounces"),
                  "stumble": ("fumble where the ball slips back", "fumbles where the ball slips back")},
        "tips": {"hesitation": "Keep the ball moving through every beat instead of holding it.",
                 "rush": "Do not rush: push each bounce exactly on the metronome.",
                 "stumble": "Control the ball so it never slips back against the dribble."},
        "refine": ["To refine, keep the eyes up while holding the same tempo.",
                   "To refine, dribble a little lower to tighten control at this tempo."],
    },
    "gymnastics_swing": {
        "scene": ["A gymnast performs giant swings around the high bar",
                  "An athlete circles the bar in a series of giant swings",
                  "A gymnast swings in full circles around a horizontal bar"],
        "names": {"hesitation": ("stall", "stalls"), "rush": ("rushed swing", "rushed swings"),
                  "stumble": ("drop back against the swing", "drops back against the swing")},
        "tips": {"hesitation": "Keep momentum through the top instead of stalling.",
                 "rush": "Do not rush the downswing; stay with the count.",
                 "stumble": "Commit to each rotation so the body never drops back."},
        "refine": ["To refine, keep the body fully extended through the bottom of each swing.",
                   "To refine, keep the same tempo while tightening the hollow shape."],
    },
}
STEADY = ["keeping a steady, even rhythm on every beat", "with smooth, evenly timed repetitions",
          "in time with the metronome throughout"]
UNEVEN = ["but the rhythm breaks on {n} of {beats} beats ({flaws})",
          "with an uneven rhythm: {n} of {beats} beats lost ({flaws})",
          "and loses the tempo on {n} of {beats} beats ({flaws})"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


def _num(n: int) -> str:
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    """Independent generator per (seed, split, video, stream); stable across processes."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), stream, index + 1])


def num_flawed(level: str, beats: int) -> int:
    return int(round(FLAWED_FRACTION[level] * beats))


# --------------------------------------------------------------------------- motion
def sample_flaws(level: str, beats: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Which beats are flawed, with flaw type and window (start inside the beat, duration)."""
    chosen = sorted(rng.choice(beats, size=num_flawed(level, beats), replace=False).tolist())
    flaws = []
    for b in chosen:
        kind = FLAW_TYPES[int(rng.integers(len(FLAW_TYPES)))]
        flaws.append({"beat": int(b), "type": kind, "start_s": b * BEAT_S + FLAW_WINDOW_S[0],
                      "duration_s": FLAW_WINDOW_S[1]})
    return flaws


def phase_track(flaws: list[dict[str, Any]], tempo: float, phase0: float, num_frames: int, fps: float,
                rng: np.random.Generator, substeps: int = 40) -> np.ndarray:
    """Phase (in cycles) at each frame time: integrated tempo with jitter and flaw windows."""
    dt = 1.0 / (fps * substeps)
    t = np.arange(num_frames * substeps) * dt + dt / 2  # midpoints of integration steps
    beats = int(np.ceil(num_frames / fps / BEAT_S)) + 1
    jitter = np.clip(rng.normal(0.0, JITTER, size=beats), -2.5 * JITTER, 2.5 * JITTER)
    wobble_f, wobble_p = rng.uniform(0.3, 0.9), rng.uniform(0, 2 * np.pi)
    wobble = 0.5 * JITTER * np.sin(2 * np.pi * wobble_f * t + wobble_p)
    rate = tempo * (1.0 + jitter[(t // BEAT_S).astype(int)] + wobble)
    for f in flaws:
        start, dur = f["start_s"], f["duration_s"]
        inside = (t >= start) & (t < start + dur)
        rate[inside] = FLAW_NET[f["type"]] / dur
        if f["type"] == "stumble":  # back by STUMBLE_SLIP in the first half, forward again in the second
            rate[inside] = np.where(t[inside] < start + dur / 2, -1.0, 1.0) * 2 * STUMBLE_SLIP / dur
    phi = np.concatenate([[0.0], np.cumsum(rate * dt)])
    return phase0 + phi[::substeps][:num_frames]


# --------------------------------------------------------------------------- text
def _flaw_list(scenario: str, flaws: list[dict[str, Any]]) -> str:
    names = TEXT[scenario]["names"]
    counts = [(k, sum(f["type"] == k for f in flaws)) for k in FLAW_TYPES]
    parts = [f"{_num(n)} {names[k][n > 1]}" for k, n in counts if n]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption(scenario: str, flaws: list[dict[str, Any]], beats: int, rng: np.random.Generator) -> str:
    """Stage-1 caption: scenario plus the visible rhythm, with seeded paraphrases."""
    scene = TEXT[scenario]["scene"][int(rng.integers(3))]
    if not flaws:
        return f"{scene}, {STEADY[int(rng.integers(len(STEADY)))]}."
    motion = UNEVEN[int(rng.integers(len(UNEVEN)))]
    return f"{scene}, " + motion.format(flaws=_flaw_list(scenario, flaws), n=len(flaws), beats=beats) + "."


def feedback(scenario: str, flaws: list[dict[str, Any]], beats: int, rng: np.random.Generator) -> str:
    """Coaching answer derived from the actual flaws (praise plus a refinement tip when clean)."""
    text = TEXT[scenario]
    if not flaws:
        refine = text["refine"][int(rng.integers(len(text["refine"])))]
        return f"Excellent control: all {beats} beats were on tempo with a steady rhythm. {refine}"
    order = sorted(FLAW_TYPES, key=lambda k: (-sum(f["type"] == k for f in flaws), FLAW_TYPES.index(k)))
    tips = " ".join(text["tips"][k] for k in order if any(f["type"] == k for f in flaws))
    return f"The rhythm broke on {len(flaws)} of {beats} beats ({_flaw_list(scenario, flaws)}). {tips}"


# --------------------------------------------------------------------------- encoding
def encode_mp4(frames: np.ndarray, path: Path, fps: float) -> None:
    """Write uint8 RGB frames as intra-only h264 (yuv420p, constant QP) mp4 with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(CODEC["codec"], rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], CODEC["pix_fmt"]
        stream.thread_count = 1
        k = CODEC["keyint"]
        stream.options = {"qp": CODEC["qp"], "preset": CODEC["preset"],
                          "x264-params": f"keyint={k}:min-keyint={k}:scenecut=0:bframes=0:threads=1"}
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def camera_view(frames: np.ndarray, camera: dict[str, Any]) -> np.ndarray:
    """Another camera on the same performance: a static zoomed, shifted and maybe mirrored crop,
    resampled back to full size (nearest neighbour). Identical for every frame, so it adds no motion."""
    size = frames.shape[1]
    side = camera["zoom"] * size
    idx = (camera["offset"][0] + np.arange(size) * side / size).astype(int).clip(0, size - 1)
    jdx = (camera["offset"][1] + np.arange(size) * side / size).astype(int).clip(0, size - 1)
    out = frames[:, idx][:, :, jdx]
    return out[:, :, ::-1] if camera["mirror"] else out


def sample_camera(rng: np.random.Generator, size: int) -> dict[str, Any]:
    """A static camera drawn from a level-independent stream."""
    zoom = float(rng.uniform(0.7, 0.9))
    free = (1.0 - zoom) * size
    return {"zoom": zoom, "offset": [float(rng.uniform(0, free)), float(rng.uniform(0, free))],
            "mirror": bool(rng.integers(2))}


def _render_job(job: dict[str, Any]) -> str:
    """Worker: render one planned video and write its mp4 (and one mp4 per extra camera view)."""
    frames = render_frames(job["scenario"], job["scene"], np.asarray(job["phases"]), job["size"])
    encode_mp4(frames, Path(job["path"]), job["fps"])
    for path, camera in job.get("cameras", []):
        encode_mp4(np.ascontiguousarray(camera_view(frames, camera)), Path(path), job["fps"])
    return job["id"]


# --------------------------------------------------------------------------- planning
def plan_split(split: str, n_per_level: int, seed: int, beats: int, num_frames: int,
               fps: float, views: Optional[list[str]] = None, size: int = 64) -> list[dict[str, Any]]:
    """Balanced, shuffled plan: level x scenario round-robin, ids deterministic from the seed."""
    pairs = [(lvl, SCENARIOS[j % len(SCENARIOS)]) for lvl in PROFICIENCY_LEVELS for j in range(n_per_level)]
    order = _rng(seed, split, -1, 0).permutation(len(pairs))
    plan = []
    for k, p in enumerate(order):
        level, scenario = pairs[int(p)]
        scene = sample_scene(scenario, _rng(seed, split, k, 0))  # static: never sees the level
        motion = _rng(seed, split, k, 1)
        flaws = sample_flaws(level, beats, motion)
        phases = phase_track(flaws, TEMPO[scenario], scene["phase0"], num_frames, fps, motion)
        text = _rng(seed, split, k, 2)
        vid = f"syn{seed}_{split}_{k:04d}"
        # the first view is the main video; every other view is a static camera on the same frames
        cameras = {v: sample_camera(_rng(seed, split, k, 3 + i), size) for i, v in enumerate((views or [])[1:])}
        plan.append({"id": vid, "split": split, "video": f"videos/{split}/{vid}.mp4", "scenario": scenario,
                     "label": level, "beats": beats, "flaws": flaws, "phases": phases.tolist(),
                     "caption": caption(scenario, flaws, beats, text),
                     "feedback": feedback(scenario, flaws, beats, text), "scene": scene,
                     "views": {**({views[0]: f"videos/{split}/{vid}.mp4"} if views else {}),
                               **{v: f"videos/{split}/{vid}_{v}.mp4" for v in cameras}},
                     "cameras": cameras})
    return plan


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _render_all(jobs: list[dict[str, Any]], workers: int, progress: bool) -> None:
    """Render and encode every job, in-process or in a worker pool, with a tqdm bar."""
    def bar() -> tqdm:
        return tqdm(total=len(jobs), desc="make-sample-data", unit="video", disable=not progress)

    if workers <= 1 or len(jobs) < 2:
        with bar() as b:
            for job in jobs:
                _render_job(job)
                b.update(1)
        return
    # fork on Linux: callers need no `__main__` guard and workers skip re-imports; the pool is
    # created before tqdm starts its monitor thread. Output does not depend on the worker count.
    ctx = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    with ctx.Pool(min(workers, len(jobs))) as pool, bar() as b:
        for _ in pool.imap_unordered(_render_job, jobs, chunksize=2):
            b.update(1)


def _skill_record(p: dict[str, Any]) -> dict[str, Any]:
    turns = [("human", QUESTION), ("gpt", p["label"]), ("human", FOLLOW_UP), ("gpt", p["feedback"])]
    return {"id": p["id"], "video": p["video"], "scenario": p["scenario"], "label": p["label"],
            "beats": p["beats"],
            "flaws": [{"beat": f["beat"], "type": f["type"]} for f in p["flaws"]],
            "conversations": [{"from": who, "value": text} for who, text in turns]}


def _video_facts(p: dict[str, Any]) -> dict[str, Any]:
    return {"id": p["id"], "split": p["split"], "video": p["video"], "scenario": p["scenario"],
            "level": p["label"], "flawed_beats": [f["beat"] for f in p["flaws"]],
            "flaw_types": [f["type"] for f in p["flaws"]], "flaws": p["flaws"],
            "start_phase": p["scene"]["phase0"], "cycles_completed": round(p["phases"][-1] - p["phases"][0], 4)}


def _split_counts(plan: list[dict[str, Any]]) -> dict[str, Any]:
    by_scenario = {sc: {lvl: sum(p["scenario"] == sc and p["label"] == lvl for p in plan)
                        for lvl in PROFICIENCY_LEVELS} for sc in SCENARIOS}
    levels = {lvl: sum(c[lvl] for c in by_scenario.values()) for lvl in PROFICIENCY_LEVELS}
    return {"num_videos": len(plan), "levels": levels, "scenarios": by_scenario}


def make_sample_data(out_dir: str | Path, seed: int = 0, per_level: Optional[dict[str, int]] = None,
                     size: int = 64, fps: int = 8, beats: int = 8, workers: int = 2,
                     progress: bool = True, views: Optional[list[str]] = None) -> dict[str, Any]:
    """Render the synthetic benchmark into ``out_dir`` and return counts per split/scenario/level.

    ``per_level`` maps split name to videos per level (default train 100, val 10, test 25). Writes
    ``videos/<split>/<id>.mp4``, ``captions_<split>.json``, ``skill_<split>.json`` and
    ``metadata.json``; the same arguments (any ``workers``) give byte-identical output. With ``views``
    (e.g. ``["ego", "exo1", "exo2"]``) every performance is also filmed by one static camera per extra
    view (``videos/<split>/<id>_<view>.mp4``) and ``skill_<split>_views.json`` holds view dicts.
    """
    if views is not None and (len(views) < 2 or len(set(views)) != len(views)):
        raise ValueError(f"views: need at least two distinct view names, got {views}")
    per_level = {k: int(v) for k, v in (DEFAULT_PER_LEVEL if per_level is None else per_level).items()}
    if seed < 0 or size < 16 or size % 2 or fps <= 0 or beats < 1:
        raise ValueError("need seed >= 0, an even size >= 16 (yuv420p), fps > 0 and beats >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # `beats` counted beats plus one clean lead-out beat: with the reference clip sampler
    # (start_i = i * (duration - clip) / num_clips) `beats` one-second clips then start exactly on the beats.
    duration_s = (beats + 1) * BEAT_S
    num_frames = int(round(duration_s * fps))
    plans = {s: plan_split(s, n, seed, beats, num_frames, fps, views, size) for s, n in per_level.items()}
    _render_all([{"id": p["id"], "scenario": p["scenario"], "scene": p["scene"], "phases": p["phases"],
                  "size": size, "fps": fps, "path": str(out / p["video"]),
                  "cameras": [(str(out / p["views"][v]), cam) for v, cam in p["cameras"].items()]}
                 for plan in plans.values() for p in plan], workers, progress)
    for split, plan in plans.items():
        _write_json(out / f"captions_{split}.json",
                    [{"id": p["id"], "video": p["video"], "caption": p["caption"]} for p in plan])
        _write_json(out / f"skill_{split}.json", [_skill_record(p) for p in plan])
        if views:
            _write_json(out / f"skill_{split}_views.json", [{**_skill_record(p), "video": p["views"]} for p in plan])
    generator = {
        "name": "skillgpt.data.synthetic", "version": 2, "seed": seed, "per_level": per_level, "size": size,
        "fps": fps, "duration_s": duration_s, "num_frames": num_frames, "beats": beats, "lead_out_beats": 1, "beat_s": BEAT_S,
        "levels": PROFICIENCY_LEVELS, "scenarios": SCENARIOS, "tempo_cycles_per_s": TEMPO,
        "flawed_beats_per_level": {lvl: num_flawed(lvl, beats) for lvl in PROFICIENCY_LEVELS},
        "flaw_net_cycles": FLAW_NET, "stumble_slip_cycles": STUMBLE_SLIP,
        "flaw_window_s": {"start_in_beat": FLAW_WINDOW_S[0], "duration": FLAW_WINDOW_S[1]},
        "tempo_jitter": JITTER, "codec": CODEC, "question": QUESTION, "views": views,
    }
    videos = [_video_facts(p) for plan in plans.values() for p in plan]
    _write_json(out / "metadata.json", {"generator": generator, "videos": videos})
    return {"out_dir": str(out), "num_videos": len(videos),
            "splits": {split: _split_counts(plan) for split, plan in plans.items()}}
