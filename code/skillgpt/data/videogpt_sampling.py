"""VideoGPT+'s frame sampling (``data.video.sampling: videogpt_plus``), index for index as its
``_get_rawvideo_dec`` (videogpt_plus/model/dataloader.py) picks frames.

The original walks the video at ``sample_fps`` frames a second (a stride of ``round(fps / sample_fps)``
frames); more than ``max_frames`` positions are thinned by an integer ``linspace``, fewer than
``min_frames`` are re-spaced to ``min_frames`` (or every frame of a shorter video). From those positions
it takes ``n`` frames with a floor step (``uniform_sample``) and pads the rest with zero frames. A segment
``(start, end)`` is cut at whole seconds (``int``), swapped when reversed and widened to one second when
empty. Checked against the original's own picks: tests/data/test_videogpt_sampling.py.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

PADDING = -1  # a frame slot the original fills with zeros (after preprocessing)


def sampled_positions(num_frames: int, fps: float, segment: Optional[tuple[float, float]] = None,
                      max_frames: int = 16, min_frames: int = 8, sample_fps: float = 1.0) -> list[int]:
    """The frame positions VideoGPT+ decodes (its ``sample_pos``) for a video of `num_frames` at `fps`."""
    if num_frames <= 0 or not fps > 0:
        raise ValueError(f"video needs frames and a positive frame rate, got {num_frames} frames at {fps} fps")
    if segment is None:
        start, end = None, None
    else:
        start, end = max(int(segment[0]), 0), max(int(segment[1]), 0)
        if start > end:
            start, end = end, start
        elif start == end:
            end = start + 1
    f_start = 0 if start is None else int(start * fps)
    f_end = int(min(1_000_000_000 if end is None else end * fps, num_frames - 1))
    count = f_end - f_start + 1
    if count <= 0:
        raise ValueError(f"segment {segment} starts after the video's last frame ({num_frames} frames at {fps} fps)")
    stride = int(round(float(fps) / int(sample_fps)))
    every = list(range(f_start, f_end + 1, stride))
    if len(every) > max_frames:
        return [every[i] for i in np.linspace(0, len(every) - 1, num=max_frames, dtype=int)]
    if len(every) < min_frames:
        wanted = min(min_frames, count)
        if wanted < 2:
            return [f_start]
        stride = max(1, (f_end - f_start) // (wanted - 1))
        return list(range(f_start, f_start + stride * (wanted - 1) + 1, stride))
    return every


def uniform_sample(positions: list[int], n: int) -> list[int]:
    """`n` of `positions` with a floor step (the original's ``uniform_sample``), `n` <= len(positions)."""
    step = len(positions) // n
    return [positions[i * step] for i in range(n)]


def frame_slots(positions: list[int], n: int) -> list[int]:
    """`n` frame indices for `n` slots: ``uniform_sample`` of the positions, then PADDING for the slots the
    original fills with zero frames."""
    taken = uniform_sample(positions, min(n, len(positions)))
    return taken + [PADDING] * (n - len(taken))
