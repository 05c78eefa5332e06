"""Per-view scoring and late fusion (the Ego-Exo4D proficiency protocol) for single-view models."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from skillgpt.eval.metrics import softmax


def fuse(view_probs: Mapping[str, Sequence[float]], groups: Mapping[str, Sequence[str]]) -> dict[str, list[float]]:
    """Average the per-view probability vectors over each group's views (official late fusion)."""
    fused = {}
    for name, views in groups.items():
        absent = [v for v in views if v not in view_probs]
        if absent:
            raise ValueError(f"eval.view_groups.{name}: views {absent} were not scored (eval.views)")
        fused[name] = [sum(view_probs[v][i] for v in views) / len(views) for i in range(len(view_probs[views[0]]))]
    return fused


def view_record(view_scores: Mapping[str, Sequence[float]], groups: Mapping[str, Sequence[str]],
                labels: Sequence[str]) -> dict[str, Any]:
    """Per-view and fused probabilities and predictions of one sample; `pred` follows the first group
    (or the first view when there are no groups)."""
    probs = {v: softmax(list(s)) for v, s in view_scores.items()}
    fused = fuse(probs, groups)
    main = next(iter(fused.values())) if fused else next(iter(probs.values()))
    argmax = lambda p: labels[max(range(len(p)), key=p.__getitem__)]  # noqa: E731
    return {
        "view_probs": probs, "fused_probs": fused, "pred": argmax(main), "main_probs": main,
        "view_preds": {v: argmax(p) for v, p in probs.items()}, "fused_preds": {g: argmax(p) for g, p in fused.items()},
    }


def view_accuracies(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Top-1 of every single view and every fused group over the records."""
    out: dict[str, dict[str, float]] = {"views": {}, "fused": {}}
    for kind, key in (("views", "view_preds"), ("fused", "fused_preds")):
        names = list(records[0][key]) if records else []
        for name in names:
            out[kind][name] = sum(r[key][name] == r["label"] for r in records) / len(records)
    return out
