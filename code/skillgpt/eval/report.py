"""Human-readable reports of an evaluation summary: text table, confusion PNG, result files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

RATE_COLUMNS = [
    ("top1", "top-1"),
    ("majority_baseline", "majority"),
    ("generated_accuracy", "gen-acc"),
    ("mean_gold_prob", "p(gold)"),
]


def _pct(value: Optional[float]) -> str:
    """A rate as a percentage with one decimal, '-' when undefined."""
    return "-" if value is None else f"{100.0 * value:.1f}%"


def _grid(rows: list[list[str]], right_from: int = 1) -> str:
    """Align a list of string rows; columns from `right_from` on are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for r, row in enumerate(rows):
        cells = [c.rjust(w) if i >= right_from else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if r == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_scenarios(summary: Mapping[str, Any]) -> str:
    """Per-scenario table with an 'all' row; the majority baseline sits beside top-1."""
    header = ["scenario", "n"] + [title for _, title in RATE_COLUMNS]
    rows = [header]
    groups = list(summary["per_scenario"].items()) + [("all", summary)]
    for name, stats in groups:
        rows.append([name, str(stats["n"])] + [_pct(stats.get(key)) for key, _ in RATE_COLUMNS])
    return _grid(rows)


def format_confusion(summary: Mapping[str, Any], labels: Sequence[str]) -> str:
    """Confusion matrix with gold labels as rows and predictions as columns, plus recall."""
    recall = summary.get("per_label_recall", {})
    rows = [["gold \\ pred"] + list(labels) + ["recall"]]
    for label, counts in zip(labels, summary["confusion"]):
        rows.append([label] + [str(c) for c in counts] + [_pct(recall.get(label))])
    return _grid(rows)


def format_views(summary: Mapping[str, Any]) -> str:
    """Top-1 of each single view and each late-fused view group, beside the majority baseline."""
    rows = [["views", "top-1", "majority"]]
    base = _pct(summary.get("majority_baseline"))
    for kind in ("views", "fused"):
        for name, rate in summary["view_top1"][kind].items():
            rows.append([name if kind == "views" else f"{name} (fused)", _pct(rate), base])
    return _grid(rows)


def format_baseline(summary: Mapping[str, Any]) -> str:
    """Where the majority baseline came from: the train split's majority label, or why there is none."""
    origin = summary.get("baseline") or {}
    majority = summary.get("majority_label")
    if majority is None:
        return f"majority baseline: none ({origin.get('reason', 'no baseline labels')})"
    return (f"majority label: {majority} (most frequent in the {origin.get('source')}, "
            f"{origin.get('n')} labelled samples; 'majority' = always predicting it)")


def format_table(summary: Mapping[str, Any], labels: Sequence[str]) -> str:
    """Full plain-text report: per-view and fused top-1 (when scored), per-scenario metrics, baseline
    origin, confusion."""
    parts = [
        *([format_views(summary), ""] if summary.get("view_top1") else []),
        format_scenarios(summary),
        format_baseline(summary),
        "",
        "confusion (rows = gold, cols = ranked prediction)",
        format_confusion(summary, labels),
    ]
    return "\n".join(parts) + "\n"


def save_confusion_png(summary: Mapping[str, Any], labels: Sequence[str], path: str | Path) -> Path:
    """Draw the confusion matrix as an annotated heat map and save it as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = summary["confusion"]
    size = max(4.0, 1.3 * len(labels) + 2.0)
    fig = Figure(figsize=(size, size * 0.85))
    FigureCanvasAgg(fig)  # Agg backend without touching pyplot's global state
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    peak = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            dark = peak > 0 and count > peak / 2
            ax.text(j, i, str(count), ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(len(labels)))
    ax.set_yticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_yticklabels(labels)
    ax.set_xlabel("predicted (ranked)")
    ax.set_ylabel("gold")
    ax.set_title(f"Confusion matrix (n={summary['n']}, top-1 {_pct(summary.get('top1'))})")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return out


def _jsonable(obj: Any) -> Any:
    """json.dumps fallback: numpy scalars/arrays via tolist(), anything else as str."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def write_results(
    summary: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    out_dir: str | Path,
) -> dict[str, Path]:
    """Write results.json, confusion.txt (full text report) and confusion.png into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "results_json": out / "results.json",
        "confusion_txt": out / "confusion.txt",
        "confusion_png": out / "confusion.png",
    }
    payload = {"labels": list(labels), "summary": summary, "records": list(records)}
    paths["results_json"].write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    paths["confusion_txt"].write_text(format_table(summary, labels), encoding="utf-8")
    rows = [["scenario", "n"] + [t for _, t in RATE_COLUMNS]]
    for name, stats in list(summary["per_scenario"].items()) + [("all", summary)]:
        rows.append([name, str(stats["n"])] + [_pct(stats.get(k)) for k, _ in RATE_COLUMNS])
    if summary.get("view_top1"):
        rows += [[f"{n} ({kind})", "", _pct(r), _pct(summary.get("majority_baseline")), "", ""]
                 for kind in ("views", "fused") for n, r in summary["view_top1"][kind].items()]
    paths["results_md"] = out / "results.md"
    paths["results_md"].write_text(markdown_table(rows) + "\n\n" + format_baseline(summary) + "\n", encoding="utf-8")
    save_confusion_png(summary, labels, paths["confusion_png"])
    return paths


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (first = header) as a GitHub Markdown table."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def format_task(summary: Mapping[str, Any]) -> str:
    """A one-row Markdown table of a non-proficiency task's metrics (rates as %, others as numbers), the
    protocol's settings (option scoring) and the answers left out as unparsable (score), by id."""
    keys = [k for k in summary if k != "task" and not isinstance(summary[k], (list, dict))]
    cell = lambda v: "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"task: {summary['task']}", markdown_table([keys, [cell(summary[k]) for k in keys]])]
    if summary.get("unparsed"):
        ids = summary.get("unparsed_ids") or []
        shown = ", ".join(ids[:10]) + (f", ... ({len(ids) - 10} more)" if len(ids) > 10 else "")
        lines.append(f"{summary['unparsed']} of {summary['n']} answers have no number and are left out of "
                     f"spearman_rho and relative_l2 (ids: {shown})")
    return "\n".join(lines)


def write_task_results(summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]], out_dir: str | Path) -> Path:
    """results.json (summary + records) and results.md (the summary table) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"summary": summary, "records": list(records)}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    (out / "results.md").write_text(format_task(summary) + "\n", encoding="utf-8")
    return out / "results.json"
