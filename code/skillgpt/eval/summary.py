"""Feedback and motion-free parts of a proficiency summary (beside ``metrics.summarize``'s level metrics).

Feedback keys, overall and in every ``per_scenario`` group (only when samples carry structured flaws):
``flaw_n``, ``flaw_exact``, ``lost_beats_mae``, ``per_type`` (``eval.flaws.flaw_stats``), ``flaw_majority``
(flaw-mix exact match of always naming the train split's most frequent mix), ``bleu4`` and ``chrf`` of
the generated feedback against the reference. ``summary["flaw_baseline"]`` says which mix that is and
where it came from. ``summary["motion_free"]`` holds top-1 and the flaw metrics of the same model on
motion-free clips (one repeated frame per clip), overall and per scenario.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from skillgpt.eval.flaws import Counts, flaw_stats, majority_mix_stats
from skillgpt.eval.tasks import text_metrics

Record = Mapping[str, Any]


def _groups(records: Sequence[Record]) -> dict[str, list[Record]]:
    by: dict[str, list[Record]] = {}
    for r in records:
        by.setdefault(str(r["scenario"]), []).append(r)
    return dict(sorted(by.items()))


def _feedback_stats(records: Sequence[Record], mix: Optional[Counts]) -> dict[str, Any]:
    stats = flaw_stats(records)
    stats["flaw_majority"] = majority_mix_stats(records, mix)["flaw_exact"]
    texts = [r for r in records if r.get("feedback") is not None]
    text = text_metrics([r["feedback"] for r in texts], [r["feedback_reference"] for r in texts]) if texts else {}
    stats["bleu4"], stats["chrf"] = text.get("bleu4"), text.get("chrf")
    return stats


def add_feedback_metrics(summary: dict[str, Any], records: Sequence[Record], mix: Optional[Counts],
                         source: str) -> None:
    """Add the feedback metrics to `summary` (and its per-scenario groups) when any record was scored
    on structured flaws; `mix` is the train split's majority flaw mix (None: no baseline)."""
    if not any(r.get("flaws_gold") is not None for r in records):
        return
    summary.update(_feedback_stats(records, mix))
    for name, group in _groups(records).items():
        summary["per_scenario"].setdefault(name, {}).update(_feedback_stats(group, mix))
    summary["flaw_baseline"] = {"mix": mix, "source": source if mix is not None else None,
                                "lost_beats_mae": majority_mix_stats(records, mix)["lost_beats_mae"]}


def _level_and_flaws(records: Sequence[Record]) -> dict[str, Any]:
    n = len(records)
    stats = flaw_stats(records)
    return {"n": n, "top1": sum(r["pred"] == r["label"] for r in records) / n if n else None,
            "flaw_exact": stats["flaw_exact"], "lost_beats_mae": stats["lost_beats_mae"]}


def motion_free_summary(records: Sequence[Record]) -> dict[str, Any]:
    """Top-1 and flaw metrics of the motion-free records, overall and per scenario."""
    return {**_level_and_flaws(records),
            "per_scenario": {name: _level_and_flaws(g) for name, g in _groups(records).items()}}
