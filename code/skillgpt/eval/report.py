"""Human-readable reports of an evaluation summary: text table, confusion PNG, result files."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

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


def _groups(summary: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """(name, stats, motion-free stats) per scenario, then 'all'."""
    free = summary.get("motion_free") or {}
    per_free = free.get("per_scenario", {})
    return [(n, st, per_free.get(n, {})) for n, st in summary["per_scenario"].items()] + [("all", summary, free)]


def _num(value: Optional[float], digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def scenario_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Level table rows: n, top-1, majority, motion-free top-1 (when scored), gen-acc, p(gold)."""
    free = "motion_free" in summary
    rows = [["scenario", "n", "top-1", "majority"] + (["motion-free"] if free else []) + ["gen-acc", "p(gold)"]]
    for name, st, mf in _groups(summary):
        rows.append([name, str(st["n"]), _pct(st.get("top1")), _pct(st.get("majority_baseline"))]
                    + ([_pct(mf.get("top1"))] if free else [])
                    + [_pct(st.get("generated_accuracy")), _pct(st.get("mean_gold_prob"))])
    return rows


def feedback_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Feedback table rows: flaw-mix exact match beside its majority and motion-free baselines, lost-beats
    error, BLEU-4 and chrF of the generated feedback."""
    free = "motion_free" in summary
    rows = [["scenario", "n", "flaw-exact", "majority"] + (["motion-free"] if free else [])
            + ["lost-beats MAE", "BLEU-4", "chrF"]]
    for name, st, mf in _groups(summary):
        rows.append([name, str(st.get("flaw_n", 0)), _pct(st.get("flaw_exact")), _pct(st.get("flaw_majority"))]
                    + ([_pct(mf.get("flaw_exact"))] if free else [])
                    + [_num(st.get("lost_beats_mae")), _num(st.get("bleu4"), 1), _num(st.get("chrf"), 1)])
    return rows


def flaw_type_rows(summary: Mapping[str, Any]) -> list[list[str]]:
    """Per flaw type: true count, precision and recall of the flaws the feedback names."""
    rows = [["flaw type", "true", "precision", "recall"]]
    for kind, st in summary.get("per_type", {}).items():
        rows.append([kind, str(st["true"]), _pct(st["precision"]), _pct(st["recall"])])
    return rows


def format_flaw_baseline(summary: Mapping[str, Any]) -> str:
    """Which flaw mix the feedback majority baseline names, and where it came from."""
    base = summary.get("flaw_baseline") or {}
    if base.get("mix") is None:
        return "feedback majority baseline: none (no train-split samples with flaws)"
    mix = ", ".join(f"{k} {v}" for k, v in base["mix"].items())
    return (f"feedback majority mix: {mix} (most frequent in the {base['source']}; 'majority' = always naming "
            f"it, lost-beats MAE {_num(base.get('lost_beats_mae'))})")


def format_scenarios(summary: Mapping[str, Any]) -> str:
    """Per-scenario table with an 'all' row; the majority (and motion-free) baseline sits beside top-1."""
    return _grid(scenario_rows(summary))


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


def format_feedback(summary: Mapping[str, Any]) -> str:
    """The feedback tables: flaw mix per scenario and precision/recall per flaw type."""
    return "\n".join(["feedback (the generated answer to the follow-up question, against the sample's flaws)",
                      _grid(feedback_rows(summary)), format_flaw_baseline(summary), "", _grid(flaw_type_rows(summary))])


def format_table(summary: Mapping[str, Any], labels: Sequence[str]) -> str:
    """Full plain-text report: per-view and fused top-1 (when scored), per-scenario metrics, baseline
    origin, confusion."""
    parts = [
        *([format_views(summary), ""] if summary.get("view_top1") else []),
        format_scenarios(summary),
        format_baseline(summary),
        "",
        *([format_feedback(summary), ""] if summary.get("flaw_n") else []),
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
    run: Optional[Mapping[str, Any]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> dict[str, Path]:
    """Write results.json (`run` provenance, summary, records, `extra` lists), results.md, confusion.txt
    (full text report) and confusion.png into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "results_json": out / "results.json",
        "confusion_txt": out / "confusion.txt",
        "confusion_png": out / "confusion.png",
    }
    payload = {"run": dict(run or {}), "labels": list(labels), "summary": summary, "records": list(records),
               **dict(extra or {})}
    paths["results_json"].write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    paths["confusion_txt"].write_text(format_table(summary, labels), encoding="utf-8")
    rows = scenario_rows(summary)
    if summary.get("view_top1"):
        pad = [""] * (len(rows[0]) - 4)
        rows += [[f"{n} ({kind})", "", _pct(r), _pct(summary.get("majority_baseline")), *pad]
                 for kind in ("views", "fused") for n, r in summary["view_top1"][kind].items()]
    parts = [markdown_table(rows), format_baseline(summary)]
    if summary.get("flaw_n"):
        parts += [markdown_table(feedback_rows(summary)), format_flaw_baseline(summary),
                  markdown_table(flaw_type_rows(summary))]
    if run:
        parts.append(f"data: {run.get('data')}; checkpoint: {run.get('checkpoint')}; settings: "
                     f"{json.dumps(run.get('settings'))}; finished {run.get('finished_utc')} ({run.get('seconds')} s)")
    paths["results_md"] = out / "results.md"
    paths["results_md"].write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    save_confusion_png(summary, labels, paths["confusion_png"])
    return paths


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (first = header) as a GitHub Markdown table."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def format_task(summary: Mapping[str, Any]) -> str:
    """A one-row Markdown table of a non-proficiency task's metrics (rates as %, others as numbers), the
    protocol's settings (option scoring), the answers left out as unparsable (score), by id, and the
    per-modality table of the generation task."""
    keys = [k for k in summary if k != "task" and not isinstance(summary[k], (list, dict))]
    cell = lambda v: "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [f"task: {summary['task']}", markdown_table([keys, [cell(summary[k]) for k in keys]])]
    if summary.get("per_modality"):  # eval.task=generation (skillgpt.eval.generation)
        from skillgpt.eval.generation import modality_rows

        lines += ["", markdown_table(modality_rows(summary))]
    if summary.get("unparsed"):
        ids = summary.get("unparsed_ids") or []
        shown = ", ".join(ids[:10]) + (f", ... ({len(ids) - 10} more)" if len(ids) > 10 else "")
        lines.append(f"{summary['unparsed']} of {summary['n']} answers have no number and are left out of "
                     f"spearman_rho and relative_l2 (ids: {shown})")
    return "\n".join(lines)


def write_task_results(summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]], out_dir: str | Path,
                       run: Optional[Mapping[str, Any]] = None) -> Path:
    """results.json (`run` provenance, summary + records) and results.md (the summary table) in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"run": dict(run or {}), "summary": summary, "records": list(records)}
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    (out / "results.md").write_text(format_task(summary) + "\n", encoding="utf-8")
    return out / "results.json"
