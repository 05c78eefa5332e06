"""What the demo accepts: upload checks (kind, size, duration, decodability) and the example clips."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillgpt.inference.assistant import SkillAssistant
    from skillgpt.serve.demo import ServeConfig

MB = 1024 * 1024
VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".mpg", ".mpeg")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus") + VIDEO_EXTS  # a video's sound track
EXTS = {"video": VIDEO_EXTS, "image": IMAGE_EXTS, "audio": AUDIO_EXTS}


class UploadRejected(ValueError):
    """An upload that the demo refuses; the message is shown to the user as is."""


# --------------------------------------------------------------------------- upload checks


def _duration_s(container: Any, stream: Any) -> float | None:
    if container.duration:
        return container.duration / 1_000_000  # av.time_base
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    rate = getattr(stream, "average_rate", None)
    if stream.frames and rate:
        return stream.frames / float(rate)
    return None


def check_upload(path: str | Path, kind: str, cfg: "ServeConfig") -> None:
    """Raise UploadRejected (a readable message naming the file) unless `path` is an acceptable `kind`
    (video | image | audio) file: an allowed extension, at most `max_upload_mb`, decodable, and (video,
    audio) at most `max_duration_s` long."""
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise UploadRejected(f"{name}: the uploaded file is missing; upload it again")
    size = p.stat().st_size
    if size == 0:
        raise UploadRejected(f"{name} is empty; upload a {kind} file")
    if size > cfg.max_upload_bytes:
        raise UploadRejected(f"{name} is too large: {size / MB:.1f} MB (the limit is {cfg.max_upload_mb:g} MB)")
    if p.suffix.lower() not in EXTS[kind]:
        raise UploadRejected(f"{name} is not a {kind} file (accepted: {', '.join(EXTS[kind])})")
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise UploadRejected(f"{name} could not be read as an image ({err})") from err
        return
    import av

    try:
        with av.open(str(p)) as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            if not streams:
                raise UploadRejected(f"{name} has no {kind} stream; upload a {kind} file")
            duration = _duration_s(container, streams[0])
    except UploadRejected:
        raise
    except Exception as err:  # PyAV's FFmpegError subclasses, OSError
        reason = getattr(err, "strerror", None) or str(err)
        raise UploadRejected(f"{name} could not be read as a {kind}: it is not a valid media file ({reason})") from err
    if duration is not None and math.isfinite(duration) and duration > cfg.max_duration_s:
        raise UploadRejected(f"{name} is too long: {duration:.1f} s (the limit is {cfg.max_duration_s:g} s)")


# --------------------------------------------------------------------------- example clips


def example_clips(assistant: "SkillAssistant", cfg: "ServeConfig") -> list[tuple[list[str], str]]:
    """(paths, label) of example clips, one path per video input (per view of `data.views`, else one):
    the videos in `cfg.examples` (single-view models), else the checkpoint's data.test samples whose
    files exist, labelled with their level and interleaved so every level shows early. Empty when none."""
    views = list(assistant.cfg.data.views or [])
    if cfg.examples:
        folder = Path(cfg.examples).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--examples {folder}: not a folder")
        if views:
            raise ValueError(f"--examples takes single clips; this model takes one clip per view {views}, "
                             "so its examples come from the checkpoint's data.test")
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in VIDEO_EXTS and f.is_file())
        return [([str(f)], f.name) for f in files[: cfg.max_examples]]
    test = assistant.cfg.data.test
    if not test or not Path(test).is_file():
        return []
    from skillgpt.data.dataset import read_samples

    try:
        samples = read_samples(test)
    except ValueError:
        return []
    root = Path(assistant.cfg.data.media_root) if assistant.cfg.data.media_root else Path(test).parent
    by_label: dict[str, list[tuple[list[str], str]]] = {}
    for s in samples:
        video = s.get("video")
        if views:
            rel = [video.get(v) for v in views] if isinstance(video, dict) else []
            if len(rel) != len(views) or not all(isinstance(r, str) for r in rel):
                continue
        elif isinstance(video, str):
            rel = [video]
        else:
            continue
        paths = [root / r for r in rel]
        if all(f.is_file() for f in paths):
            label = str(s.get("label", ""))
            name = str(s.get("id") or Path(rel[0]).stem) if views else Path(rel[0]).stem
            by_label.setdefault(label, []).append(([str(f) for f in paths], f"{name} ({label})" if label else name))
    out: list[tuple[list[str], str]] = []
    while len(out) < cfg.max_examples and any(by_label.values()):
        for label in list(by_label):
            if by_label[label] and len(out) < cfg.max_examples:
                out.append(by_label[label].pop(0))
    return out
