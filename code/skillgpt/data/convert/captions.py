"""Caption data (WebVid / CC3M style) -> stage-1 caption pairs.

Input, either

- JSON: a list of ``{"video": "clip.mp4", "caption": "..."}`` or ``{"image": "img.jpg", "caption": "..."}``
  (``id`` optional: default ``<input stem>_<index>``), or
- WebVid CSV (``results_2M_train.csv``): columns ``videoid,name,contentUrl,...``; the caption is ``name``
  and the file is ``video_pattern`` filled with the row's columns (default ``"{videoid}.mp4"``, e.g.
  ``"{page_dir}/{videoid}.mp4"``). ``contentUrl`` is never fetched.

Output (``as_format="caption"``, the default; ``data.format: caption``)::

    {"id": "1066674784", "video": "videos/1066674784.mp4", "caption": "..."}

Stage 1's caption prompts hold ``<video>``, so image captions need ``as_format="conversation"``, which
writes ``{"id", "image", "caption", "conversations": [{"from": "human", "value": "<image>\\nDescribe this
image."}, {"from": "gpt", "value": caption}]}`` (``<video>`` and "video" for videos) for
``data.format: conversation``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from skillgpt.data.convert._common import (
    Context, Conversion, ConversionError, entry_list, format_pattern, read_csv, read_structured,
)

PROMPTS = {"video": "<video>\nDescribe this video.", "image": "<image>\nDescribe this image."}


def _rows(input_path: Path, ctx: Context, video_pattern: Optional[str]) -> list[tuple[str, dict[str, Any]]]:
    """(entry name, {"id"?, "video"/"image", "caption"}) per input row, before checks."""
    if input_path.suffix.lower() == ".csv":
        pattern = video_pattern or "{videoid}.mp4"
        out = []
        for i, row in enumerate(read_csv(input_path, ["videoid", "name"])):
            entry = ctx.entry(i + 2, "videoid", row.get("videoid"))  # CSV line number (header is line 1)
            entry = entry.replace("entry", "line", 1)
            video = format_pattern(pattern, entry, ctx, **row)
            if video is not None:
                out.append((entry, {"id": row["videoid"], "video": video, "caption": row["name"]}))
        return out
    if video_pattern:
        raise ConversionError("--video-pattern applies to WebVid CSV input only (JSON entries name their files)")
    entries = entry_list(read_structured(input_path), input_path, "annotations")
    return [(ctx.entry(i, "id", e.get("id") if isinstance(e, dict) else None), e) for i, e in enumerate(entries)]


def convert(input_path: Path, ctx: Context, *, video_pattern: Optional[str] = None,
            as_format: Optional[str] = None) -> Conversion:
    fmt = as_format or "caption"
    if fmt not in ("caption", "conversation"):
        raise ConversionError(f"--as: expected caption or conversation, got {as_format!r}")
    samples = []
    for i, (entry, e) in enumerate(_rows(input_path, ctx, video_pattern)):
        if not isinstance(e, dict):
            ctx.error(entry, None, f"expected an object with 'video' or 'image' and 'caption', got {type(e).__name__}")
            continue
        kinds = [k for k in ("video", "image") if e.get(k) is not None]
        if len(kinds) != 1 or not isinstance(e[kinds[0]], str) or not e[kinds[0]]:
            ctx.error(entry, kinds[0] if len(kinds) == 1 else "video", "expected exactly one media path, "
                      f"'video' or 'image' (a string), got {({k: e[k] for k in ('video', 'image') if k in e})!r}")
            continue
        kind = kinds[0]
        caption = e.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            ctx.error(entry, "caption", f"expected a non-empty string, got {caption!r}")
            continue
        if kind == "image" and fmt == "caption":
            ctx.error(entry, "image", "image captions need --as conversation (stage-1 caption prompts hold <video>)")
            continue
        sid = str(e.get("id") if e.get("id") is not None else f"{input_path.stem}_{i}")
        if not ctx.claim_id(sid, entry):
            continue
        sample: dict[str, Any] = {"id": sid, kind: ctx.path(e[kind]), "caption": caption.strip()}
        if fmt == "conversation":
            sample["conversations"] = [{"from": "human", "value": PROMPTS[kind]},
                                       {"from": "gpt", "value": caption.strip()}]
        samples.append(sample)
    return ctx.finish(samples, fmt)
