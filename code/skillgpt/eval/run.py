"""`skillgpt eval`: proficiency top-1 by label likelihood, generated-answer accuracy, reports.

Each sample is scored with its own first human turn when it has one (the prompt it was trained on),
else `eval.question` (``skillgpt.data.prompt.eval_question``). Its media are encoded once and reused by
label scoring and generation; the majority baseline is the train split's (``data.train``)."""
from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from skillgpt.data.cached_features import open_features
from skillgpt.data.dataset import DataError, read_samples
from skillgpt.data.media import sample_media
from skillgpt.data.prompt import eval_question, without_placeholders
from skillgpt.eval.flaws import feedback_turns, flaw_record, flaw_types, has_flaws, majority_mix
from skillgpt.eval.generation import evaluate_generation
from skillgpt.eval.metrics import summarize
from skillgpt.eval.provenance import default_out_dir, run_info
from skillgpt.eval.summary import add_feedback_metrics, motion_free_summary
from skillgpt.eval.report import format_table, write_results
from skillgpt.eval.report import format_task, write_task_results
from skillgpt.eval.tasks import run_task
from skillgpt.eval.views import view_accuracies, view_record
from skillgpt.inference.self_questioning import label_scores_in_context, self_questioning_context
from skillgpt.inference.assistant import SkillAssistant

FEEDBACK_TOKENS_PER_ANSWER_TOKEN = 4  # feedback gets 4 x eval.max_new_tokens (the level answer is one line)


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


def _feedback(assistant: SkillAssistant, sample: dict, question: str, answer: str, media: list,
              types: list[str]) -> dict[str, Any]:
    """The model's own feedback, asked as in chat: the sample's follow-up question after the model's own
    level answer; with the flaws it names against the sample's structured flaws (``eval.flaws``)."""
    turns = feedback_turns(sample)
    if turns is None or not has_flaws(sample):
        return {}
    follow_up, reference = turns
    context = [{"from": "human", "value": assistant.with_placeholders(question, media)},
               {"from": "gpt", "value": answer}, {"from": "human", "value": follow_up}]
    text = assistant.reply(context, media, max_new_tokens=FEEDBACK_TOKENS_PER_ANSWER_TOKEN * assistant.cfg.eval.max_new_tokens)
    return {"feedback": text, "feedback_reference": reference,
            **flaw_record(text, sample, types, f"sample {sample.get('id', '?')}")}


def score_sample(assistant: SkillAssistant, sample: dict, media: list, labels: list[str],
                 generate: bool, flaw_types: list[str] | None = None) -> dict[str, Any]:
    """One sample's record: label scores and (with `generate`) the generated answer, from media encoded
    once (`media` holds encoder features); with `flaw_types` and a sample carrying structured flaws, also
    the generated feedback and its flaw counts."""
    cfg = assistant.cfg
    question = eval_question(sample, cfg.eval.question)
    row = assistant.label_scores([media], question, labels)[0]
    answer = assistant.ask(question, media, max_new_tokens=cfg.eval.max_new_tokens) if generate else None
    record = {"id": str(sample.get("id")), "scenario": str(sample.get("scenario", "all")), "label": sample["label"],
              "pred": labels[int(row.argmax())], "scores": row.tolist(), "generated": answer}
    if answer is not None and flaw_types is not None:
        record.update(_feedback(assistant, sample, question, answer, media, flaw_types))
    return record


def freeze_motion(media: list) -> list:
    """Motion-free media: every video clip's frames replaced by its first frame (one repeated frame per
    clip), other media unchanged. A model that reads the level and flaws from motion is at chance here."""
    return [(kind, p.narrow(-3, 0, 1).expand_as(p).contiguous() if kind == "video" else p) for kind, p in media]


def _motion_free(assistant: SkillAssistant, samples: list[dict], root: Path, labels: list[str], generate: bool,
                 types: list[str] | None) -> list[dict[str, Any]]:
    """Records of every sample scored again on motion-free clips (``freeze_motion``), decoded anew."""
    return [score_sample(assistant, s, assistant.encode_media(freeze_motion(assistant.load(s, root))), labels,
                          generate, types) for s in tqdm(samples, desc="eval motion-free")]


def train_samples(cfg: Any) -> list[dict] | None:
    """The samples of `data.train` (the majority baselines' source), None when it is not configured or
    not readable."""
    if not cfg.data.train:
        return None
    try:
        return read_samples(cfg.data.train)
    except DataError:
        return None


def train_labels(cfg: Any) -> list[str] | None:
    """The `label`s of `data.train` (the majority baseline's source), None when it is not configured or
    not readable."""
    samples = train_samples(cfg)
    return None if samples is None else [str(s["label"]) for s in samples if "label" in s]


def evaluate(ckpt: str | Path, split: str | None = None, out_dir: str | Path | None = None,
             limit: int | None = None, generate: bool = True, overrides: list[str] | None = None,
             motion_free: bool = False) -> dict[str, Any]:
    """Score `data.<split>` of the checkpoint's config (plus `overrides`); write results.json, results.md
    and confusion files into `out_dir` (default: a folder per data file and settings, see
    ``eval.provenance``). With `eval.views`, every view is scored alone and late-fused
    (`eval.view_groups`). Samples with structured ``flaws`` also get their generated feedback scored
    (``eval.flaws``); `motion_free` scores every sample again on one repeated frame per clip."""
    started = time.time()
    assistant = SkillAssistant(ckpt, overrides=overrides)
    cfg = assistant.cfg
    split = split or cfg.eval.split
    path = getattr(cfg.data, split, None)
    if not path:
        raise ValueError(f"data.{split}: no file configured for split {split!r}")
    samples = read_samples(path)[:limit]
    root = Path(cfg.data.media_root) if cfg.data.media_root else Path(path).parent
    settings = {"overrides": list(overrides or []), "limit": limit, "generate": generate, "motion_free": motion_free}
    out = Path(out_dir) if out_dir else default_out_dir(assistant.ckpt, split, path, settings)
    info = lambda: run_info(assistant.ckpt, split, path, settings, started, asdict(cfg.eval))  # noqa: E731
    if cfg.eval.task == "generation":  # teacher-forced, batched as trained (skillgpt.eval.generation)
        summary, records = evaluate_generation(assistant, path, limit)
    elif cfg.eval.task != "proficiency":
        summary, records = run_task(assistant, samples, root, str(path), generate)
    if cfg.eval.task != "proficiency":
        print(format_task(summary))
        print(f"results: {write_task_results(summary, records, out, info())}")
        return summary
    by_view = bool(cfg.eval.views)
    items = [] if by_view else [sample_media(s, root, cfg.data, f"{path}: sample {s.get('id', i)}")
                                for i, s in enumerate(samples)]
    features = open_features(cfg, assistant.model, [it for its in items for it in its], f"data.{split} ({path})")
    labels = list(cfg.eval.labels)
    types = flaw_types(samples) if any(has_flaws(s) for s in samples) else None
    records: list[dict[str, Any]] = []
    bs = cfg.eval.batch_size
    for start in tqdm(range(0, len(samples), bs), desc=f"eval {split}"):
        chunk, chunk_items = samples[start : start + bs], items[start : start + bs]
        for s in chunk:
            if "generate" in s and "label" not in s:
                raise DataError(f"{path}: sample {s.get('id', '?')} asks for media generation ('generate' field): "
                                "evaluate this file with eval.task=generation (docs/generation.md)")
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
            records.append(score_sample(assistant, s, assistant.encode_media(item), labels, generate, types))
    train = train_samples(cfg)
    source = f"train split (data.train: {cfg.data.train})"
    summary = summarize(records, labels, baseline_labels=None if train is None else
                        [str(s["label"]) for s in train if "label" in s], baseline_source=source)
    if by_view:
        summary["view_top1"] = view_accuracies(records)
    add_feedback_metrics(summary, records, None if train is None else majority_mix(train, types or []), source)
    extra: dict[str, Any] = {}
    if motion_free and not by_view and cfg.eval.self_questions == 0:
        frozen = _motion_free(assistant, samples, root, labels, generate, types)
        summary["motion_free"] = motion_free_summary(frozen)
        extra["motion_free_records"] = frozen
    paths = write_results(summary, records, labels, out, run=info(), extra=extra)
    print(format_table(summary, labels))
    print(f"results: {paths['results_md']} (table), {paths['results_json']} (summary, records, run)")
    print(f"plots: {paths['confusion_png']}")
    return summary
