"""`skillgpt eval` with ``eval.task=generation``: NExT-GPT's decoder side, measured as trained.

Every sample of the split goes through the model teacher-forced, batched as in training (``SkillDataset`` +
``collate``). A sample with a ``generate`` field (``{"modality", "caption"}``, its answer holding the modality's
signal tokens, docs/generation.md) gives the conditioning of its signal tokens through the output projectors;
against its caption's cached embedding (``data.caption_cache.<modality>``) that is, per modality:

- ``l2_loss``: NExT-GPT's stage-2 loss (``generation.alignment.l2_loss``), mean over the samples;
- ``retrieval_top1``: the fraction of samples whose conditioning is closest (centred cosine,
  ``generation.alignment.nearest``) to their own caption's embedding among the distinct captions of the split
  for that modality (``chance`` = 1 / that number; a caption that several samples share counts once);
- ``signal_token_acc``: teacher-forced, the fraction of signal tokens the LM head predicts (argmax): whether the
  model asks for the modality where it should.

Samples without ``generate`` (ordinary text answers, e.g. stage 3's skill Q&A) are scored by their answers'
teacher-forced cross-entropy (``text_loss``, mean per answer token), so a mixed instruction-tuning file is
evaluated whole.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from skillgpt.data.dataset import DataError, SkillDataset, collate
from skillgpt.data.media import media_to
from skillgpt.data.templates import llm_template
from skillgpt.generation.alignment import nearest


def _by_row(keep: torch.Tensor) -> torch.Tensor:
    """The batch row of each supervised position (row-major, as `supervised_logits` orders them)."""
    return keep.nonzero()[:, 0]


@torch.no_grad()
def _score_batch(model: Any, batch: dict[str, Any], device: torch.device, signal_ids: dict[str, list[int]],
                 generate: dict[str, tuple[str, str]]) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """Records of one batch and, per modality, (conditioning, target, caption) of its generate rows."""
    ids = batch["input_ids"].to(device)
    logits, targets, keep, states, embeds = model.supervised_states(
        ids, batch["attention_mask"].to(device), batch["labels"].to(device), media_to(batch["media"], device))
    rows = _by_row(keep)
    token_loss = F.cross_entropy(logits, targets, reduction="none")
    hit = logits.argmax(-1) == targets
    records = []
    for r, sid in enumerate(batch["ids"]):
        mine = rows == r
        rec: dict[str, Any] = {"id": sid, "tokens": int(mine.sum()),
                               "loss": float(token_loss[mine].mean()) if bool(mine.any()) else None}
        if sid in generate:
            modality, caption = generate[sid]
            signal = mine & torch.isin(targets, torch.tensor(signal_ids[modality], device=targets.device))
            rec.update(kind="generate", modality=modality, caption=caption,
                       signal_token_acc=float(hit[signal].float().mean()) if bool(signal.any()) else None)
        else:
            rec["kind"] = "text"
        records.append(rec)
    conditioning: dict[str, list] = {}
    by_id = {r["id"]: r for r in records}
    for modality, (picked, target) in (batch.get("caption_embeds") or {}).items():
        picked = picked.to(device)
        pred = model.generation.conditioning(modality, [h[picked] for h in states], embeds[picked], ids[picked])
        target = target.to(pred.device).float()
        for k, row in enumerate(picked.tolist()):
            rec = by_id[batch["ids"][row]]
            rec["l2"] = float(((pred[k].float() - target[k]) ** 2).sum(-1).sqrt().mean())
            conditioning.setdefault(modality, []).append((pred[k].float().cpu(), target[k].cpu(), rec))
    return records, conditioning


def _modality_summary(items: list[tuple[torch.Tensor, torch.Tensor, dict[str, Any]]]) -> dict[str, Any]:
    """l2, retrieval top-1 among the distinct captions, signal-token accuracy of one modality's samples."""
    captions = list(dict.fromkeys(rec["caption"] for _, _, rec in items))
    index = {c: i for i, c in enumerate(captions)}
    targets = torch.stack([next(t for _, t, rec in items if rec["caption"] == c) for c in captions])
    top1: Optional[float] = None
    if len(captions) >= 2:
        best = nearest(torch.stack([p for p, _, _ in items]), targets).tolist()
        for (_, _, rec), b in zip(items, best):
            rec["retrieved"] = captions[b]
            rec["retrieved_own"] = b == index[rec["caption"]]
        top1 = sum(rec["retrieved_own"] for _, _, rec in items) / len(items)
    accs = [rec["signal_token_acc"] for _, _, rec in items if rec["signal_token_acc"] is not None]
    return {"n": len(items), "captions": len(captions), "l2_loss": sum(rec["l2"] for _, _, rec in items) / len(items),
            "retrieval_top1": top1, "chance": 1.0 / len(captions) if len(captions) >= 2 else None,
            "signal_token_acc": sum(accs) / len(accs) if accs else None}


def evaluate_generation(assistant: Any, path: str | Path, limit: Optional[int] = None
                        ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(summary, per-sample records) of ``eval.task=generation`` on the data file `path` (first `limit` samples)."""
    cfg, model = assistant.cfg, assistant.model
    if model.generation is None:
        raise ValueError("eval.task=generation: the model has no signal tokens (set model.generation.*_tokens; "
                         "docs/generation.md)")
    dataset = SkillDataset(path, cfg.data, assistant.tokenizer, llm_template(cfg.model.llm), assistant.placeholder_tokens,
                           cfg.model.llm.max_length)
    dataset.examples = dataset.examples[:limit]
    generate = {ex.id: ex.generate for ex in dataset.examples if ex.generate is not None}
    if not generate:
        raise DataError(f"{path}: no sample has a 'generate' field ({{\"modality\", \"caption\"}}); eval.task=generation "
                        "measures the signal tokens' alignment (docs/generation.md)")
    absent = sorted({m for m, _ in generate.values()} - set(model.generation.signal_ids))
    if absent:
        raise DataError(f"{path}: samples ask for {absent}, which the model has no signal tokens for "
                        f"(model.generation has {sorted(model.generation.signal_ids)})")
    loader = DataLoader(dataset, batch_size=cfg.eval.batch_size,
                        collate_fn=partial(collate, pad_id=assistant.tokenizer.pad_token_id))
    records: list[dict[str, Any]] = []
    per_modality: dict[str, list] = {}
    for batch in loader:
        recs, cond = _score_batch(model, batch, assistant.device, model.generation.signal_ids, generate)
        records += recs
        for modality, items in cond.items():
            per_modality.setdefault(modality, []).extend(items)
    text = [r for r in records if r["kind"] == "text" and r["tokens"]]
    tokens = sum(r["tokens"] for r in text)
    summary: dict[str, Any] = {
        "task": "generation", "n": len(records), "n_generate": len(generate), "n_text": len(records) - len(generate),
        "text_loss": sum(r["loss"] * r["tokens"] for r in text) / tokens if tokens else None,
        "per_modality": {m: _modality_summary(items) for m, items in sorted(per_modality.items())},
    }
    return summary, records


def modality_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Per-modality table rows: n, distinct captions, l2, retrieval top-1 beside chance, signal-token accuracy."""
    pct = lambda v: "-" if v is None else f"{100.0 * v:.1f}%"  # noqa: E731
    rows = [["modality", "n", "captions", "l2 loss", "retrieval top-1", "chance", "signal-token acc"]]
    for m, st in summary["per_modality"].items():
        rows.append([m, str(st["n"]), str(st["captions"]), f"{st['l2_loss']:.4f}", pct(st["retrieval_top1"]),
                     pct(st["chance"]), pct(st["signal_token_acc"])])
    return rows
