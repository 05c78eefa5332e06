"""Video file -> clip tensor, exactly as ImageBind's reference video preprocessing.

Reference pipeline (ImageBind ``load_and_transform_video_data`` with pytorchvideo at the commit it pins,
6cdc929; all computed here, PyPI's pytorchvideo 0.1.5 has the old clip-sampler bug):
  * ``num_clips`` clips of ``clip_duration`` seconds with starts ``i * max(duration - clip_duration, 0) /
    max(n - 1, 1)`` (the fixed ``ConstantClipsPerVideoSampler``; duration = frames / decord's average fps),
  * the frames of a clip are those with index in ``[ceil(fps*start), ceil(fps*end))`` computed in float
    (pytorchvideo's decord backend), of which ``frames_per_clip`` are picked by float32
    ``linspace(0, t - 1, frames_per_clip)`` truncated (``UniformTemporalSubsample``),
  * ``/ 255``, short side to ``resolution`` by ``F.interpolate`` bilinear without antialias
    (``short_side_scale``), normalise, then square crops (centre, or left/centre/right --
    top/centre/bottom for portrait -- for 3 crops).
Checked against the reference's own outputs: tests/data/test_reference_preprocessing.py.

A segment ``(start, end)`` in seconds (MVBench ``start``/``end``) is sampled as if it were the whole
video: the frames with index in ``[ceil(fps*start), ceil(fps*end))`` (clamped to the video).

With ``cfg.processor`` naming a Hugging Face model folder, the decoded frames follow that model's
``preprocessor_config.json`` instead (data/hf_preprocessing.py); clip and frame sampling stay as above.

Only the sampled frames are decoded, bit-identical to decord ``get_batch`` (``_decode_pyav``, else
``get_batch``), and each is resized once however many clips share it.
"""
from __future__ import annotations

import bisect
import contextlib
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from skillgpt.config.schema import VideoConfig
from skillgpt.data.hf_preprocessing import preprocess_clips
from skillgpt.data.videogpt_sampling import PADDING, frame_slots, sampled_positions
from skillgpt.pixel_rules import processor_rules

# Names the media preprocessing (video here, audio.py's clips and media.load_image alike); part of the
# feature-cache signature, so features cached from differently preprocessed inputs are never reused.
# Change it whenever the output pixels or log-mels change.
PREPROCESSING = "imagebind-reference-6cdc929/2"
# pixel formats whose PyAV rgb24 conversion is checked equal to decord's (tests/data/test_video.py)
PYAV_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuv444p"})
# The PyAV path first reads every packet of the file to index it (~12 us a packet plus the bytes); decord
# reads only the container's index. Larger files (long 4K recordings) go to decord get_batch.
PYAV_MAX_BYTES = 256 * 2**20


class MediaError(ValueError):
    """A media file is missing or cannot be decoded; the message names the path and what was expected."""


def clip_times(duration: float, clip_duration: float, num_clips: int) -> list[tuple[Fraction | float, Fraction | float]]:
    """(start, end) seconds of ``num_clips`` clips, as pytorchvideo's fixed ``ConstantClipsPerVideoSampler``.

    The sampler as fixed in pytorchvideo 9368f30 (every commit ImageBind pins; PyPI 0.1.5 has the bug
    ``max_start / n``): start ``i`` is ``Fraction(max(duration - clip_duration, 0)) / max(n - 1, 1) * i``, so
    the last clip ends at the video's end; a video shorter than a clip gives ``n`` clips starting at 0.
    Types follow the sampler's arithmetic: an integral ``clip_duration`` is added as an int (exact
    fraction, as ImageBind's ``clip_duration=2``), any other as a float.
    """
    length: int | float = int(clip_duration) if float(clip_duration).is_integer() else float(clip_duration)
    max_start = Fraction(max(duration - length, 0))
    step = Fraction(max_start, max(num_clips - 1, 1))
    return [(step * i, step * i + length) for i in range(num_clips)]


def clip_starts(num_frames: int, fps: float, cfg: VideoConfig) -> list[Fraction]:
    """Start times (seconds) of the ``cfg.num_clips`` clips of a ``num_frames / fps`` second video."""
    return [start for start, _ in clip_times(float(num_frames) / float(fps), cfg.clip_duration, cfg.num_clips)]


def frame_index(fps: float, seconds: Fraction | float) -> int:
    """First frame at or after ``seconds``: ``ceil(fps * t)`` in float, as pytorchvideo's decord backend
    (25 fps x 0.84 s = 21.000000000000004 -> frame 22)."""
    return math.ceil(fps * seconds)


def uniform_subsample(count: int, num_samples: int) -> list[int]:
    """``num_samples`` offsets into ``count`` frames: pytorchvideo's ``uniform_temporal_subsample``
    (float32 ``linspace(0, count - 1, num_samples)`` truncated; repeats frames when ``count`` is short)."""
    return torch.linspace(0, count - 1, num_samples).clamp(0, count - 1).long().tolist()


def sample_frame_indices(num_frames: int, fps: float, cfg: VideoConfig,
                         start_shifts: list[float] | None = None) -> list[list[int]]:
    """Frame indices for each clip: ``cfg.num_clips`` lists of ``cfg.frames_per_clip`` indices.

    As ImageBind's reference (pytorchvideo's decord backend, duration ``num_frames / fps`` in float): a
    clip covers frames ``[ceil(fps * start), ceil(fps * end))`` clamped to the video (a video shorter than
    a clip yields the whole video), of which ``uniform_subsample`` picks ``frames_per_clip`` (first and
    last included). ``start_shifts`` (training augmentation: temporal jitter) moves each clip's start by
    that many seconds, clamped so the clip stays inside the video.
    """
    if num_frames <= 0:
        raise ValueError(f"video has no frames (num_frames={num_frames})")
    if not (fps > 0 and math.isfinite(fps)):
        raise ValueError(f"video frame rate must be a positive number, got fps={fps}")
    if cfg.num_clips < 1 or cfg.frames_per_clip < 1 or cfg.clip_duration <= 0:
        raise ValueError(
            "video config needs num_clips >= 1, frames_per_clip >= 1 and clip_duration > 0, got "
            f"num_clips={cfg.num_clips}, frames_per_clip={cfg.frames_per_clip}, clip_duration={cfg.clip_duration}"
        )
    duration = float(num_frames) / float(fps)
    times = clip_times(duration, cfg.clip_duration, cfg.num_clips)
    if start_shifts is not None:
        latest = max(duration - cfg.clip_duration, 0.0)
        starts = [min(max(float(start) + shift, 0.0), latest) for (start, _), shift in zip(times, start_shifts)]
        times = [(start, start + cfg.clip_duration) for start in starts]
    clips: list[list[int]] = []
    for start, end in times:
        first = min(frame_index(fps, start), num_frames - 1)
        stop = min(frame_index(fps, end), num_frames)
        count = max(stop - first, 1)  # a clip shorter than one frame period still gets its first frame
        clips.append([first + o for o in uniform_subsample(count, cfg.frames_per_clip)])
    return clips


def segment_frames(num_frames: int, fps: float, segment: tuple[float, float]) -> tuple[int, int]:
    """Frame index range ``[first, end)`` of a segment ``(start, end)`` in seconds: ``[ceil(fps*start),
    ceil(fps*end))`` (``frame_index``), the end clamped to the video, at least one frame. ValueError when
    the segment starts at or after the video's end, or is not ``0 <= start < end``."""
    start, end = segment
    if not (0 <= start < end):
        raise ValueError(f"segment must satisfy 0 <= start < end (seconds), got start={start}, end={end}")
    first = frame_index(fps, start)
    if first >= num_frames:
        raise ValueError(f"segment starts at {start}s, at or after the video's end "
                         f"({num_frames} frames at {fps:g} fps = {num_frames / fps:.3f}s)")
    last = min(frame_index(fps, end), num_frames)
    return first, max(last, first + 1)


def crop_offsets(height: int, width: int, size: int, num_crops: int) -> list[tuple[int, int]]:
    """(top, left) of each square crop: centre for 1 crop; start/centre/end of the long side for 3."""
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    top = math.ceil((height - size) / 2)
    left = math.ceil((width - size) / 2)
    if num_crops == 1:
        return [(top, left)]
    if height > width:
        return [(0, left), (top, left), (height - size, left)]
    return [(top, 0), (top, left), (top, width - size)]


def _open(path: Path, num_threads: int):
    """Open ``path`` with decord, turning every failure into a MediaError."""
    if not path.exists():
        raise MediaError(f"{path}: video file not found (expected a readable video file)")
    if not path.is_file():
        raise MediaError(f"{path}: not a regular file (expected a video file)")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty (expected a video file)")
    try:
        import decord
    except ImportError as err:  # pragma: no cover - decord is a hard dependency
        raise MediaError(f"{path}: cannot decode video, decord is not installed") from err
    try:
        return decord.VideoReader(os.fspath(path), ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as err:  # decord raises its own DECORDError / RuntimeError types
        raise MediaError(f"{path}: cannot be opened as a video (expected a decodable video file): {err}") from err


def _decode_pyav(path: Path, wanted: list[int], num_frames: int, keys: list[int],
                 num_threads: int) -> np.ndarray | None:
    """``wanted`` (sorted, unique decord indices) as uint8 [F, H, W, 3] via PyAV; None where not verified.

    Decord's frame index is the rank of the packet's pts. A seek costs 0.03-0.14 ms, a decoded packet
    0.2-0.5 ms (bench/frame_sampling.py), so the reader seeks to the next wanted frame's keyframe when its
    packet is ahead and otherwise decodes on; unwanted frames are decoded only if they are references
    (``skip_frame=NONREF``). Display rotations (phone video) are applied
    in quarter turns. None (decord decides) for other rotations, other pixel formats, missing or duplicate
    pts, keyframes unlike decord's, several video streams or missing frames.
    """
    import av

    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context
        if len(container.streams.video) != 1 or codec.format is None or codec.format.name not in PYAV_FORMATS:
            return None
        codec.thread_count, codec.thread_type = num_threads, "AUTO"  # frame + slice threads, as decord
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]  # decode order
        pts = sorted(t for t, _ in packets if t is not None)
        if not len(packets) == len(set(pts)) == num_frames:
            return None
        rank = {t: i for i, t in enumerate(pts)}  # pts -> decord frame index
        order = {rank[t]: d for d, (t, _) in enumerate(packets)}  # frame index -> decode position
        if sorted(rank[t] for t, key in packets if key) != keys or keys[:1] != [0]:
            return None
        row, out = {w: r for r, w in enumerate(wanted)}, None
        need, first, demuxer, ahead, sought = set(wanted), 0, None, 0, -1  # ahead: next packet's decode position
        while first < len(wanted):
            key = keys[bisect.bisect_right(keys, wanted[first]) - 1]
            if demuxer is None or (order[key] > ahead and key != sought):
                container.seek(pts[key], stream=stream, backward=True)  # also flushes the decoder
                demuxer, ahead, sought = container.demux(stream), -1, key
            packet = next(demuxer)  # the last one is empty: it drains the decoder
            index = rank.get(packet.pts)
            if packet.size:
                if index is None or (ahead < 0 and (order[index] > order[key] or not packet.is_keyframe)):
                    return None  # unknown packet, or the seek overshot the keyframe (before it is fine)
                ahead = order[index] + 1
            codec.skip_frame = "DEFAULT" if index in need else "NONREF"
            for frame in codec.decode(packet):
                if frame.rotation % 90:
                    return None  # not a quarter turn: decord decides
                if (i := rank.get(frame.pts)) in need:
                    # the display matrix's quarter turns, counter-clockwise (as decord, which crashes on some sizes)
                    rgb = np.rot90(frame.to_ndarray(format="rgb24"), frame.rotation // 90 % 4)
                    out = np.empty((len(wanted), *rgb.shape), np.uint8) if out is None else out
                    out[row[i]] = rgb  # raises (-> decord) if the frame size changes
                    need.discard(i)
            while first < len(wanted) and wanted[first] not in need:
                first += 1
            if not packet.size and need:
                return None  # end of stream, frames missing
        return out


def _decode(reader, path: Path, wanted: list[int], num_threads: int) -> torch.Tensor:
    """The ``wanted`` frames as uint8 [F, H, W, 3]: PyAV path, else decord ``get_batch``."""
    with contextlib.suppress(Exception):  # any PyAV problem: decord decides, and reports errors as before
        if path.stat().st_size <= PYAV_MAX_BYTES and (frames := _decode_pyav(path, wanted, len(reader), [int(k) for k in reader.get_key_indices()],
                                   num_threads)) is not None:
            return torch.from_numpy(frames)
    try:
        return torch.utils.dlpack.from_dlpack(reader.get_batch(wanted).to_dlpack())  # no numpy copy
    except Exception as err:
        raise MediaError(f"{path}: failed to decode frames {wanted} (expected a decodable video): {err}") from err


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) after scaling the short side to ``size``, as pytorchvideo's ``short_side_scale``
    (the long side is ``floor(long / short * size)`` in float; a square frame counts as landscape)."""
    if width < height:
        return int(math.floor((float(height) / width) * size)), size
    return size, int(math.floor((float(width) / height) * size))


def preprocess(frames: torch.Tensor, clips: list[list[int]], wanted: list[int], cfg: VideoConfig) -> torch.Tensor:
    """uint8 [F, H, W, 3] (row r = frame ``wanted[r]``) -> float32 [num_clips * num_crops, 3, T, R, R].

    The reference's order and arithmetic in float32: ``/ 255``, ``short_side_scale`` (``F.interpolate``
    bilinear, ``align_corners=False``, no antialias), normalise ``(x - mean) / std``, then the crops.
    Frames are resized once each, however many clips share them.
    """
    size = cfg.resolution
    # [3, F, H, W] contiguous as the reference's [C, T, H, W] (the layout picks interpolate's kernel; this one
    # matches bit for bit); transposed while still uint8, 2x cheaper than transposing floats
    x = frames.permute(3, 0, 1, 2).contiguous().float().div_(255.0)
    new_h, new_w = short_side_size(x.shape[-2], x.shape[-1], size)
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    mean = torch.as_tensor(cfg.mean, dtype=x.dtype).view(3, 1, 1, 1)
    std = torch.as_tensor(cfg.std, dtype=x.dtype).view(3, 1, 1, 1)
    x = x.sub_(mean).div_(std)
    offsets = crop_offsets(new_h, new_w, size, cfg.num_crops)
    position = {frame: row for row, frame in enumerate(wanted)}
    out: list[torch.Tensor] = []
    for clip in clips:
        clip_frames = x[:, [position[i] for i in clip]]  # [3, T, h, w]
        for top, left in offsets:
            out.append(clip_frames[..., top:top + size, left:left + size])
    return torch.stack(out).contiguous()


def load_video(path: str | os.PathLike, cfg: VideoConfig, num_threads: int = 1,
               start_shifts: list[float] | None = None,
               segment: tuple[float, float] | None = None) -> torch.Tensor:
    """Decode and preprocess a video into float32 ``[num_clips * num_crops, 3, frames_per_clip, R, R]``.

    Rows are clip-major: clip 0 crop 0, clip 0 crop 1, ..., clip 1 crop 0, ...
    ``segment`` (seconds): the clips are sampled inside ``[start, end]`` only, as if it were the video.
    Raises MediaError (naming the path) for a missing, unreadable or empty video, or a segment past its end.
    """
    path = Path(path)
    reader = _open(path, num_threads)
    num_frames = len(reader)
    if num_frames <= 0:
        raise MediaError(f"{path}: video has no frames (expected at least one decodable frame)")
    fps = float(reader.get_avg_fps())  # decord's average rate, as pytorchvideo's decord backend uses
    if not (fps > 0 and math.isfinite(fps)):
        raise MediaError(f"{path}: video reports frame rate {fps} (expected a positive frame rate)")
    try:
        clips = _clip_frames(num_frames, fps, cfg, start_shifts, segment)
    except ValueError as err:
        raise MediaError(f"{path}: {err}") from err
    padded = [(c, t) for c, clip in enumerate(clips) for t, i in enumerate(clip) if i == PADDING]
    if padded:  # VideoGPT+ pads a short video with zero frames: decode a real one there, zero it below
        clips = [[clip[0] if i == PADDING else i for i in clip] for clip in clips]
    wanted = sorted({i for clip in clips for i in clip})
    frames = _decode(reader, path, wanted, num_threads)
    if frames.ndim != 4 or frames.shape[0] != len(wanted) or frames.shape[-1] != 3:
        raise MediaError(f"{path}: decoded frames have shape {tuple(frames.shape)} (expected [F, H, W, 3])")
    if (rules := processor_rules(cfg.processor)) is not None:  # a Hugging Face model's own pixel rules
        out = preprocess_clips(frames, clips, wanted, rules, cfg.num_crops)
    else:
        out = preprocess(frames, clips, wanted, cfg)
    for c, t in padded:  # rows are clip-major, crops within a clip
        out[c * cfg.num_crops:(c + 1) * cfg.num_crops, :, t] = 0
    return out


def _clip_frames(num_frames: int, fps: float, cfg: VideoConfig, start_shifts: list[float] | None,
                 segment: tuple[float, float] | None) -> list[list[int]]:
    """Frame indices of every clip by `cfg.sampling` (PADDING marks a zero frame); ValueError for a
    segment outside the video."""
    if cfg.sampling == "videogpt_plus":  # no temporal jitter: the original has none
        per_clip = cfg.frames_per_clip
        slots = frame_slots(sampled_positions(num_frames, fps, segment, cfg.max_frames, cfg.min_frames,
                                              cfg.sample_fps), cfg.num_clips * per_clip)
        return [slots[c * per_clip:(c + 1) * per_clip] for c in range(cfg.num_clips)]
    first, end = (0, num_frames) if segment is None else segment_frames(num_frames, fps, segment)
    return [[first + i for i in clip] for clip in sample_frame_indices(end - first, fps, cfg, start_shifts)]
