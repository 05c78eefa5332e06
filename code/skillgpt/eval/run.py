"""`skillgpt eval`: proficiency top-1 by label likelihood, generated-answer accuracy, reports."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from skillgpt.data.cached_features import open_features
from skillgpt.data.dataset import DataError, read_samples
from skillgpt.data.media import sample_media
from skillgpt.eval.metrics import summarize
from skillgpt.eval.report import format_table, write_results
from skillgpt.inference.assistant import SkillAssistant


def evaluate(ckpt: str | Path, split: str | None = None, out_dir: str | Path | None = None,
             limit: int | None = None, generate: bool = True) -> dict[str, Any]:
    """Score `data.<split>` of the checkpoint's config; write results.json and confusion files."""
    assistant = SkillAssistant(ckpt)
    cfg = assistant.cfg
    split = split or cfg.eval.split
    path = getattr(cfg.data, split, None)
    if not path:
        raise ValueError(f"data.{split}: no file configured for split {split!r}")
    samples = read_samples(path)[:limit]
    root = Path(cfg.data.media_root) if cfg.data.media_root else Path(path).parent
    items = [sample_media(s, root, cfg.data, f"{path}: sample {s.get('id', i)}") for i, s in enumerate(samples)]
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
        if features is not None:  # cached encoder outputs, exactly what online encoding would give
            media = [[(it.kind, features.lookup(it)) for it in its] for its in chunk_items]
        else:
            media = [assistant.load(s, root) for s in chunk]
        scores = assistant.label_scores(media, cfg.eval.question, labels)
        for s, item, row in zip(chunk, media, scores):
            answer = assistant.ask(cfg.eval.question, item, max_new_tokens=cfg.eval.max_new_tokens) if generate else ""
            records.append({
                "id": str(s.get("id")), "scenario": str(s.get("scenario", "all")), "label": s["label"],
                "pred": labels[int(row.argmax())], "scores": row.tolist(), "generated": answer,
            })
    summary = summarize(records, labels)
    out = Path(out_dir) if out_dir else assistant.ckpt / f"eval_{split}"
    paths = write_results(summary, records, labels, out)
    print(format_table(summary, labels))
    print(f"results: {paths['results_json']}")
    return summary
