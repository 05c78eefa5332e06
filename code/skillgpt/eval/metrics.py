"""Model-independent evaluation metrics for proficiency-level predictions.

A record is a dict with keys ``id``, ``scenario``, ``label`` (gold), ``pred`` (label ranked
most likely), ``scores`` (log-likelihood per label, in ``labels`` order) and ``generated``
(free-text answer). Rates are fractions in [0, 1]; a rate over zero samples is ``None``.

The majority baseline follows the published protocol: the accuracy on the evaluated split of always
predicting the *train* split's most frequent label. The evaluated split's own majority would be an
oracle (it knows the test labels), so without train labels the baseline is ``None`` with the reason.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Mapping, Optional, Sequence

Record = Mapping[str, Any]


def _rate(hits: int, n: int) -> Optional[float]:
    """hits / n, or None when there is nothing to divide by."""
    return hits / n if n else None


def softmax(scores: Sequence[float]) -> list[float]:
    """Numerically stable softmax of log-likelihoods."""
    if not scores:
        raise ValueError("softmax of an empty score list")
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def _label_pattern(label: str) -> re.Pattern[str]:
    """Whole-phrase, case-insensitive pattern; words may be split by spaces, '-' or '_'."""
    words = label.split()
    body = r"[\s\-_]+".join(re.escape(w) for w in words)
    return re.compile(rf"(?<![\w]){body}(?![\w])", re.IGNORECASE)


def mentioned_labels(text: str, labels: Sequence[str]) -> list[str]:
    """Labels mentioned in `text` as whole phrases, in order of first appearance.

    Longer labels are matched first and their spans masked, so a label nested inside a
    longer one (e.g. "Expert" inside "Late Expert") is not counted twice.
    """
    masked = text
    found: list[tuple[int, str]] = []
    for label in sorted(set(labels), key=len, reverse=True):
        hits = list(_label_pattern(label).finditer(masked))
        if not hits:
            continue
        found.append((hits[0].start(), label))
        for m in reversed(hits):  # mask with same-length filler so offsets stay valid
            masked = masked[: m.start()] + "\0" * (m.end() - m.start()) + masked[m.end() :]
    return [label for _, label in sorted(found)]


def generated_correct(text: str, gold: str, labels: Sequence[str]) -> bool:
    """True when the gold label is the only label mentioned in the generated text."""
    return mentioned_labels(text, labels) == [gold]


def _validate(records: Sequence[Record], labels: Sequence[str]) -> None:
    """Raise ValueError for unknown labels/preds or score lists of the wrong length."""
    if len(set(labels)) != len(labels) or not labels:
        raise ValueError(f"labels must be non-empty and unique, got {list(labels)}")
    known = set(labels)
    for rec in records:
        rid = rec.get("id", "<no id>")
        if rec["label"] not in known:
            raise ValueError(f"record {rid!r}: gold label {rec['label']!r} not in labels {list(labels)}")
        if rec["pred"] not in known:
            raise ValueError(f"record {rid!r}: pred {rec['pred']!r} not in labels {list(labels)}")
        if len(rec["scores"]) != len(labels):
            raise ValueError(
                f"record {rid!r}: {len(rec['scores'])} scores for {len(labels)} labels"
            )


def _group_stats(
    records: Sequence[Record], labels: Sequence[str], majority: Optional[str]
) -> dict[str, Any]:
    """n, top1, generated_accuracy, majority_baseline and mean_gold_prob of one group."""
    n = len(records)
    top1 = sum(r["pred"] == r["label"] for r in records)
    generated = [r for r in records if r.get("generated") is not None]  # None: generation was skipped
    gen = sum(generated_correct(r["generated"] or "", r["label"], labels) for r in generated)
    maj = sum(r["label"] == majority for r in records) if majority is not None else None
    index = {label: i for i, label in enumerate(labels)}
    gold_probs = [softmax(r["scores"])[index[r["label"]]] for r in records]
    return {
        "n": n,
        "top1": _rate(top1, n),
        "generated_accuracy": _rate(gen, len(generated)),
        "majority_baseline": None if maj is None else _rate(maj, n),
        "mean_gold_prob": sum(gold_probs) / n if n else None,
    }


def confusion_matrix(records: Sequence[Record], labels: Sequence[str]) -> list[list[int]]:
    """Counts with rows = gold label, columns = ranked prediction, both in `labels` order."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for rec in records:
        matrix[index[rec["label"]]][index[rec["pred"]]] += 1
    return matrix


def majority_label(records: Sequence[Record], labels: Sequence[str]) -> Optional[str]:
    """Most frequent gold label; ties go to the label earliest in `labels`."""
    counts = Counter(r["label"] for r in records)
    if not counts:
        return None
    return max(labels, key=lambda label: (counts[label], -labels.index(label)))


def baseline_origin(baseline_labels: Optional[Sequence[str]], labels: Sequence[str],
                    source: str) -> tuple[Optional[str], dict[str, Any]]:
    """(majority label, where it came from) of the baseline: the most frequent of `baseline_labels`
    (the train split's gold labels, ties to the earliest in `labels`), or None with the reason."""
    if baseline_labels is None:
        return None, {"source": None, "n": 0, "reason": "no train-split labels were given; the evaluated "
                      "split's own majority would be an oracle, so no baseline is reported"}
    unknown = sorted({str(b) for b in baseline_labels} - set(labels))
    if unknown:
        raise ValueError(f"baseline labels ({source}) {unknown} are not in labels {list(labels)}")
    if not baseline_labels:
        return None, {"source": source, "n": 0, "reason": f"the {source} has no labelled samples"}
    majority = majority_label([{"label": b} for b in baseline_labels], labels)
    return majority, {"source": source, "n": len(baseline_labels), "reason": None}


def summarize(records: Sequence[Record], labels: Sequence[str], baseline_labels: Optional[Sequence[str]] = None,
              baseline_source: str = "train split") -> dict[str, Any]:
    """Aggregate metrics over `records`; `baseline_labels` are the gold labels of `baseline_source` (the
    train split) whose majority label is the baseline's constant prediction.

    Keys: n, top1, generated_accuracy, majority_label, majority_baseline, baseline (source, n, reason:
    where the majority label came from, or why there is none), mean_gold_prob, per_scenario ({scenario:
    same rate keys}), confusion (rows gold, cols pred), per_label_recall ({label: recall or None}),
    labels. Per-scenario majority_baseline is the accuracy, within that scenario, of always predicting
    the train majority label.
    """
    labels = list(labels)
    _validate(records, labels)
    majority, origin = baseline_origin(baseline_labels, labels, baseline_source)
    summary: dict[str, Any] = _group_stats(records, labels, majority)
    summary["majority_label"] = majority
    summary["baseline"] = origin

    by_scenario: dict[str, list[Record]] = {}
    for rec in records:
        by_scenario.setdefault(str(rec["scenario"]), []).append(rec)
    summary["per_scenario"] = {
        name: _group_stats(group, labels, majority) for name, group in sorted(by_scenario.items())
    }

    matrix = confusion_matrix(records, labels)
    summary["confusion"] = matrix
    summary["per_label_recall"] = {
        label: _rate(matrix[i][i], sum(matrix[i])) for i, label in enumerate(labels)
    }
    summary["labels"] = labels
    return summary
