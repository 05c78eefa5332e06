"""Ego-Exo4D demonstrator expert commentary -> feedback conversations.

Input (one object per take; ``proficiency_score``, ``take_name`` and every ``timestamp`` optional; an
item may also be a plain string)::

    {"annotations": [
      {"take_uid": "0a1b...", "scenario_name": "Basketball",
       "video_paths": {"ego": "takes/.../aria01.mp4", "exo1": "takes/.../cam01.mp4", ...},
       "proficiency_score": "Early Expert",
       "good_executions": [{"text": "Eyes up while dribbling.", "timestamp": 3.2}, ...],
       "tips_for_improvement": [{"text": "Keep the elbow in.", "timestamp": 12.5}, ...]}]}

Output: per take and kind (``kinds``: ``tips`` and/or ``good``, default both) one sample whose last
assistant turn is the reference for ``eval.task=feedback``::

    {"id": "0a1b..._tips", "video": {...}, "scenario": "Basketball", "label": "Early Expert",
     "conversations": [{"from": "human", "value": "<video>\\nWhat should this athlete improve?"},
                       {"from": "gpt", "value": "at 12.5 s: Keep the elbow in.\\nat 20.0 s: ..."}]}

(``_good``: "What did the athlete do well?" -> the good executions.) ``multi_turn`` writes one sample per
take instead, good executions first and tips last. Items are joined one per line, in the given order,
each prefixed "at T s: " (T with one or two decimals) when it has a timestamp. A take with no items of
a kind is skipped for that kind. ``views`` / ``skip_incomplete`` / ``single_view`` as for ``egoexo4d-proficiency``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from skillgpt.data.convert._common import (
    Context, Conversion, ConversionError, entry_list, number, parse_views, read_structured, view_video,
)
from skillgpt.data.convert.egoexo4d_proficiency import LEVELS, canonical_label, check_single_view, take_fields

KINDS = {  # kind -> (annotation field, question)
    "good": ("good_executions", "What did the athlete do well?"),
    "tips": ("tips_for_improvement", "What should this athlete improve?"),
}


def seconds(t: float) -> str:
    """12.5 -> "12.5", 3 -> "3.0", 3.25 -> "3.25" (at most two decimals)."""
    out = f"{t:.2f}".rstrip("0")
    return out + "0" if out.endswith(".") else out


def format_items(items: Any, ctx: Context, entry: str, field_name: str) -> Optional[str]:
    """The items as lines "at 12.5 s: text" (or "text"); None when empty or malformed (error recorded)."""
    if items is None:
        return None
    if not isinstance(items, list):
        ctx.error(entry, field_name, f"expected a list of {{'text', 'timestamp'?}} objects, got {type(items).__name__}")
        return None
    lines = []
    for j, item in enumerate(items):
        text, stamp = (item, None) if isinstance(item, str) else (
            (item.get("text"), item.get("timestamp")) if isinstance(item, dict) else (None, None))
        if not isinstance(text, str) or not text.strip():
            ctx.error(entry, f"{field_name}[{j}].text", f"expected a non-empty string, got {item!r}")
            return None
        if stamp is not None and number(stamp) is None:
            ctx.error(entry, f"{field_name}[{j}].timestamp", f"expected seconds as a number, got {stamp!r}")
            return None
        text = " ".join(text.split())
        lines.append(text if stamp is None else f"at {seconds(number(stamp))} s: {text}")
    return "\n".join(lines) or None


def convert(input_path: Path, ctx: Context, *, views: Optional[str] = None, skip_incomplete: bool = False,
            single_view: bool = False, kinds: Optional[str] = None, multi_turn: bool = False) -> Conversion:
    wanted = parse_views(views)
    check_single_view(wanted, single_view)
    chosen = [k.strip() for k in (kinds or "tips,good").split(",") if k.strip()]
    if not chosen or any(k not in KINDS for k in chosen):
        raise ConversionError(f"--kinds: expected a comma-separated subset of {sorted(KINDS)}, got {kinds!r}")
    if multi_turn:  # good executions first: the tips are the last reply (the feedback reference)
        chosen = [k for k in ("good", "tips") if k in chosen]
    samples = []
    for i, ann in enumerate(entry_list(read_structured(input_path), input_path, "annotations")):
        named = take_fields(ann, ctx, i)
        if named is None:
            continue
        entry, uid = named
        label = None
        if ann.get("proficiency_score") is not None:
            label = canonical_label(ann["proficiency_score"])
            if label is None:
                ctx.error(entry, "proficiency_score", f"{ann['proficiency_score']!r} is not one of {list(LEVELS)}")
        scenario = ann.get("scenario_name")
        if not isinstance(scenario, str) or not scenario:
            ctx.error(entry, "scenario_name", f"expected a non-empty string, got {scenario!r}")
        answers = {k: format_items(ann.get(KINDS[k][0]), ctx, entry, KINDS[k][0]) for k in chosen}
        video = view_video(ann.get("video_paths"), ctx, entry, wanted, skip_incomplete, single_view)
        if video is None:
            continue
        head = {"video": video, "scenario": scenario, **({"label": label} if label else {})}
        for k in chosen:
            if answers[k] is None:
                ctx.skip(entry, f"no {KINDS[k][0]}")
        present = [k for k in chosen if answers[k] is not None]
        groups = [present] if multi_turn else [[k] for k in present]
        for group in groups:
            if not group:
                continue
            sid = uid if multi_turn else f"{uid}_{group[0]}"
            if not ctx.claim_id(sid, entry):
                continue
            turns = []
            for n, k in enumerate(group):
                q = KINDS[k][1]
                turns += [{"from": "human", "value": f"<video>\n{q}" if n == 0 else q},
                          {"from": "gpt", "value": answers[k]}]
            samples.append({"id": sid, **head, "conversations": turns})
    return ctx.finish(samples)
