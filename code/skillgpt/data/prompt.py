"""The one prompt builder: which placeholders a prompt holds and how multi-view videos expand.

Used by training (``data.checks``), eval, ``skillgpt infer``, chat and the demo. The rules:

- **Placeholders come from the media given.** A question gets exactly one placeholder per media item of
  each kind: the ones it lacks are put before it (one per line, in video, image, audio order); a
  placeholder of a kind with *no* media at all is dropped (so the default ``eval.question``'s ``<video>``
  serves an image-only or audio-only sample); more placeholders of a kind than items of that kind is
  an error naming both counts.
- **Views.** With ``data.view_mode: separate`` one multi-view video is one logical ``<video>`` in the
  question, expanded to one labelled ``<video>`` per view (``expand_view_placeholders``) only when the
  prompt is tokenized; the loaded media then holds one item per view. Fused views are one item.
- **Eval's prompt** is the sample's own first human turn when it has one (the prompt it was trained
  on), else ``eval.question`` (``eval_question``).
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Optional, Sequence

from skillgpt.config.schema import DataConfig
from skillgpt.data.media import PLACEHOLDER_OF

__all__ = ["eval_question", "expand_view_placeholders", "first_human_turn", "logical_counts", "place_placeholders", "without_placeholders"]
Turn = dict[str, str]


def expand_view_placeholders(turns: list[Turn], cfg: DataConfig) -> list[Turn]:
    """``view_mode: separate``: each ``<video>`` becomes one labelled ``<video>`` per view."""
    if not cfg.views or cfg.view_mode != "separate":
        return turns
    labelled = " ".join(f"{v}: <video>" for v in cfg.views)
    return [{**t, "value": t["value"].replace("<video>", labelled)} for t in turns]


def without_placeholders(question: str, placeholders: Iterable[str]) -> str:
    """`question` for a turn after the media were given: its placeholders removed."""
    for placeholder in placeholders:
        question = question.replace(placeholder, "")
    return question.strip()


def logical_counts(kinds: Sequence[str], cfg: DataConfig) -> dict[str, int]:
    """Placeholders a prompt needs per kind for media items of `kinds` (one per item; with
    ``view_mode: separate`` the per-view video items of one video share one ``<video>``)."""
    counts = {kind: sum(k == kind for k in kinds) for kind in PLACEHOLDER_OF}
    if cfg.views and cfg.view_mode == "separate" and counts["video"]:
        per_video = len(cfg.views)
        if counts["video"] % per_video:
            raise ValueError(f"{counts['video']} video items are not whole multi-view videos "
                             f"(data.views={list(cfg.views)}, view_mode=separate)")
        counts["video"] //= per_video
    return counts


def _drop(text: str, placeholder: str) -> str:
    """`text` without `placeholder` and the whitespace that followed it."""
    return re.sub(re.escape(placeholder) + r"[ \t]*\n?", "", text).strip()


def place_placeholders(question: str, kinds: Sequence[str], cfg: DataConfig) -> str:
    """`question` with one placeholder per (logical) media item of `kinds` (see the module rules);
    views are not expanded here (``expand_view_placeholders`` does that at tokenization)."""
    need = logical_counts(kinds, cfg)
    prefix: list[str] = []
    for kind, placeholder in PLACEHOLDER_OF.items():
        have = question.count(placeholder)
        if have and not need[kind]:
            question = _drop(question, placeholder)
        elif have > need[kind]:
            raise ValueError(f"the question holds {have} {placeholder} placeholders but {need[kind]} {kind} "
                             f"item(s) were given: {question!r}")
        else:
            prefix += [placeholder] * (need[kind] - have)
    return "\n".join(prefix + ([question] if question else []))


def first_human_turn(sample: Mapping[str, Any]) -> Optional[str]:
    """The text of the sample's first human/user turn (conversation format), or None."""
    turns = sample.get("conversations")
    if not isinstance(turns, list):
        return None
    for t in turns:
        if isinstance(t, dict) and t.get("from") in ("human", "user") and isinstance(t.get("value"), str):
            return t["value"]
    return None


def eval_question(sample: Mapping[str, Any], default: str) -> str:
    """Eval's prompt for a sample: its own first human turn when it has one, else `default` (eval.question)."""
    return first_human_turn(sample) or default
