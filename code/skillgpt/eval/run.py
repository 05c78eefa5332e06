"""`skillgpt eval`: proficiency top-1 by label likelihood, generated-answer accuracy, reports.

Each sample is scored with its own first human turn when it has one (the prompt it was trained on),
else `eval.question` (``skillgpt.data.prompt.eval_question``). Its media are encoded once and reused by
label scoring and generation; the majority baseline is the train split's (``data.train``)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from skillgpt.data.cached_features import open_features
from skillgpt.data.dataset import DataError, read_samples
from skillgpt.data.media import sample_media
from skillgpt.data.prompt import eval_question, without_placeholders
from skillgpt.eval.metrics import summarize
from skillgpt.eval.report import format_table, write_results
from skillgpt.eval.report import format_task, write_task_results
from skillgpt.eval.tasks import run_task
from skillgpt.eval.views import view_accuracies, view_record
from skillgpt.inference.self_questioning import label_scores_in_context, self_questioning_context
from skillgpt.inference.assistant import SkillAssistant


def _score_views(assistant: SkillAssistant, chunk: list[dict], root: Path,
                 path: str) -> tuple[list[dict[str, Any]], list[list]]:
    """Ego-Exo4D protocol: every sample's `eval.views` scored one at a time, then late-fused. Returns the
    records and each sample's first view as encoder features (for generation, so it is encoded once)."""
    cfg = assistant.cfg
    if cfg.data.views:
        raise ValueError("eval.views scores one view at a time, but this model takes several views at once "
                         f"(data.views={list(cfg.data.views)}); leave eval.views empty for it")
    labels, views = list(cfg.eval.labels), list(cfg.eval.views)
    per_view: list[dict[str, list[float]]] = [{} for _ in chunk]
    first: list[list] = []
    for view in views:
        for s, row in zip(chunk, per_view):
            if not isinstance(s.get("video"), dict) or view not in s["video"]:
                raise DataError(f"{path}: sample {s.get('id', '?')} has no view {view!r} in 'video' (eval.views)")
            media = assistant.encode_media(assistant.load({"video": s["video"][view]}, root))
            row[view] = assistant.label_scores([media], eval_question(s, cfg.eval.question), labels)[0].tolist()
            if view == views[0]:
                first.append(media)
    return [view_record(scores, dict(cfg.eval.view_groups), labels) for scores in per_view], first


def _score_sample(assistant: SkillAssistant, sample: dict, media: list, labels: list[str],
                  generate: bool) -> dict[str, Any]:
    """One sample's record: label scores and (with `generate`) the generated answer, from media encoded
    once (`media` holds encoder features)."""
    cfg = assistant.cfg
    question = eval_question(sample, cfg.eval.question)
    row = assistant.label_scores([media], question, labels)[0]
    answer = assistant.ask(question, media, max_new_tokens=cfg.eval.max_new_tokens) if generate else None
    return {"id": str(sample.get("id")), "scenario": str(sample.get("scenario", "all")), "label": sample["label"],
            "pred": labels[int(row.argmax())], "scores": row.tolist(), "generated": answer}


def train_labels(cfg: Any) -> list[str] | None:
    """The `label`s of `data.train` (the majority baseline's source), None when it is not configured or
    not readable."""
    if not cfg.data.train:
        return None
    try:
        return [str(s["label"]) for s in read_samples(cfg.data.train) if "label" in s]
    except DataError:
        return None


def evaluate(ckpt: str | Path, split: str | None = None, out_dir: str | Path | None = None,
             limit: int | None = None, generate: bool = True, overrides: list[str] | None = None) -> dict[str, Any]:
    """Score `data.<split>` of the checkpoint's config (plus `overrides`); write results.json and confusion
    files. With `eval.views`, every view is scored alone and late-fused (`eval.view_groups`)."""
    assistant = SkillAssistant(ckpt, overrides=overrides)
    cfg = assistant.cfg
    split = split or cfg.eval.split
    path = getattr(cfg.data, split, None)
    if not path:
        raise ValueError(f"data.{split}: no file configured for split {split!r}")
    samples = read_samples(path)[:limit]
    root = Path(cfg.data.media_root) if cfg.data.media_root else Path(path).parent
    out = Path(out_dir) if out_dir else assistant.ckpt / f"eval_{split}"
    if cfg.eval.task != "proficiency":
        summary, records = run_task(assistant, samples, root, str(path), generate)
        print(format_task(summary))
        print(f"results: {write_task_results(summary, records, out)}")
        return summary
    by_view = bool(cfg.eval.views)
    items = [] if by_view else [sample_media(s, root, cfg.data, f"{path}: sample {s.get('id', i)}")
                                for i, s in enumerate(samples)]
    features = open_features(cfg, assistant.model, [it for its in items for it in its], f"data.{split} ({path})")
    labels = list(cfg.eval.labels)
    records: list[dict[str, Any]] = []
    bs = cfg.eval.batch_size
    for start in tqdm(range(0, len(samples), bs), desc=f"eval {split}"):
        chunk, chunk_items = samples[start : start + bs], items[start : start + bs]
        for s in chunk:
            if "label" not in s or not any(s.get(k) for k in ("video", "image", "audio")):
                raise DataError(f"{path}: sample {s.get('id', '?')} needs 'label' and media (video/image/audio) "
                                "for evaluation")
        if by_view:
            view_records, first_views = _score_views(assistant, chunk, root, path)
            for s, rec, first in zip(chunk, view_records, first_views):
                answer = None
                if generate:
                    answer = assistant.ask(eval_question(s, cfg.eval.question), first,
                                           max_new_tokens=cfg.eval.max_new_tokens)
                scores = [math.log(max(p, 1e-30)) for p in rec.pop("main_probs")]
                records.append({"id": str(s.get("id")), "scenario": str(s.get("scenario", "all")),
                                "label": s["label"], "scores": scores, "generated": answer, **rec})
            continue
        if cfg.eval.self_questions > 0:
            for s in chunk:
                media = assistant.encode_media(assistant.load(s, root))
                context = self_questioning_context(assistant, media, cfg.eval.self_questions, cfg.eval.max_new_tokens)
                question = eval_question(s, cfg.eval.question)
                row = label_scores_in_context(assistant, context, media, question, labels)
                answer = None
                if generate:
                    follow_up = {"from": "human", "value": without_placeholders(question, assistant.placeholder_tokens)}
                    answer = assistant.reply(context + [follow_up], media, max_new_tokens=cfg.eval.max_new_tokens)
                records.append({"id": str(s.get("id")), "scenario": str(s.get("scenario", "all")), "label": s["label"],
                                "pred": labels[int(row.argmax())], "scores": row.tolist(), "generated": answer,
                                "self_questions": context})
            continue
        if features is not None:  # cached encoder outputs, exactly what online encoding would give
            media = [[(it.kind, features.lookup(it)) for it in its] for its in chunk_items]
        else:
            media = [assistant.load(s, root) for s in chunk]
        for s, item in zip(chunk, media):
            records.append(_score_sample(assistant, s, assistant.encode_media(item), labels, generate))
    summary = summarize(records, labels, baseline_labels=train_labels(cfg),
                        baseline_source=f"train split (data.train: {cfg.data.train})")
    if by_view:
        summary["view_top1"] = view_accuracies(records)
    paths = write_results(summary, records, labels, out)
    print(format_table(summary, labels))
    print(f"results: {paths['results_json']}")
    return summary
