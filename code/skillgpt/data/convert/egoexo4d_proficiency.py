"""Ego-Exo4D demonstrator proficiency -> rating conversations (one sample per take).

Input (``proficiency_demonstrator_{train,val}.json``)::

    {"annotations": [
      {"take_uid": "0a1b...", "take_name": "upenn_0711_Dance_2_4",      # take_name optional
       "scenario_name": "Dance", "proficiency_score": "Intermediate Expert",
       "video_paths": {"ego": "takes/.../aria01_214-1.mp4", "exo1": "takes/.../cam01.mp4", ...}}]}

Output sample::

    {"id": "0a1b...", "video": {"ego": "...", "exo1": "...", ...}, "scenario": "Dance",
     "label": "Intermediate Expert", "take_name": "...",
     "conversations": [{"from": "human", "value": "<video>\\nWhat is the proficiency level of this athlete?"},
                       {"from": "gpt", "value": "Intermediate Expert"}]}

``views`` keeps those views in that order (default: every view the take has); a take without a
requested view is an error naming its take_uid and the view, or is skipped with ``skip_incomplete``.
``single_view`` (with exactly one view) writes ``video`` as that view's path, for single-view training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from skillgpt.constants import PROFICIENCY_LEVELS
from skillgpt.data.convert._common import (
    Context, Conversion, ConversionError, entry_list, parse_views, read_structured, view_video, with_placeholder,
)

LEVELS = PROFICIENCY_LEVELS
QUESTION = "<video>\nWhat is the proficiency level of this athlete?"


def canonical_label(value: Any) -> Optional[str]:
    """One of the four levels, matched without regard to case, spaces, '-' or '_'; None otherwise."""
    if not isinstance(value, str):
        return None
    key = "".join(value.lower().replace("-", " ").replace("_", " ").split())
    return next((lv for lv in LEVELS if lv.lower().replace(" ", "") == key), None)


def take_fields(ann: Any, ctx: Context, index: int) -> Optional[tuple[str, str]]:
    """(entry name, take_uid) of an annotation, or None after recording the error."""
    if not isinstance(ann, dict):
        ctx.error(ctx.entry(index), None, f"expected an object, got {type(ann).__name__}")
        return None
    uid = ann.get("take_uid")
    entry = ctx.entry(index, "take_uid", uid)
    if not isinstance(uid, str) or not uid:
        ctx.error(entry, "take_uid", f"expected a non-empty string, got {uid!r}")
        return None
    return entry, uid


def check_single_view(views: Optional[list[str]], single_view: bool) -> None:
    if single_view and (views is None or len(views) != 1):
        raise ConversionError(f"--single-view needs exactly one view in --views, got {views}")


def convert(input_path: Path, ctx: Context, *, views: Optional[str] = None, skip_incomplete: bool = False,
            single_view: bool = False, question: Optional[str] = None) -> Conversion:
    wanted = parse_views(views)
    check_single_view(wanted, single_view)
    prompt = with_placeholder(question, QUESTION)
    samples = []
    for i, ann in enumerate(entry_list(read_structured(input_path), input_path, "annotations")):
        named = take_fields(ann, ctx, i)
        if named is None:
            continue
        entry, uid = named
        label = canonical_label(ann.get("proficiency_score"))
        if label is None:
            ctx.error(entry, "proficiency_score", f"{ann.get('proficiency_score')!r} is not one of {list(LEVELS)}")
        scenario = ann.get("scenario_name")
        if not isinstance(scenario, str) or not scenario:
            ctx.error(entry, "scenario_name", f"expected a non-empty string, got {scenario!r}")
        video = view_video(ann.get("video_paths"), ctx, entry, wanted, skip_incomplete, single_view)
        if video is None or label is None or not ctx.claim_id(uid, entry):
            continue
        sample: dict[str, Any] = {"id": uid, "video": video, "scenario": scenario, "label": label}
        if isinstance(ann.get("take_name"), str):
            sample["take_name"] = ann["take_name"]
        sample["conversations"] = [{"from": "human", "value": prompt}, {"from": "gpt", "value": label}]
        samples.append(sample)
    return ctx.finish(samples)
