"""Validation during training on `data.val`: the mean loss (as trained) and, for proficiency data, the
label top-1 that `skillgpt eval` reports.

Top-1 is scored by the eval code itself (``skillgpt.eval.run.score_sample`` over the inference facade,
``SkillAssistant`` -> ``inference.scoring``) on the model being trained, so a checkpoint's val top-1
here equals `skillgpt eval --split val` on it. Every process runs the same validation (as the loss
always did): under ZeRO-3 each forward gathers parameters collectively, so the ranks must make the
same calls; the results are the same on every rank and rank 0 reports them.
"""
from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
from torch.utils.data import DataLoader

from skillgpt.config import Config
from skillgpt.data.dataset import DataError, SkillDataset, collate, read_samples
from skillgpt.data.media import media_to
from skillgpt.data.templates import llm_template
from skillgpt.distributed import rank as process_rank
from skillgpt.eval.metrics import summarize
from skillgpt.eval.run import score_sample
from skillgpt.inference.assistant import Media, SkillAssistant
from skillgpt.models.skill_model import SkillGPT


def check_validation_config(cfg: Config) -> None:
    """train.keep_best needs data.val (checked before the model is built); train.eval_every without it
    validates nothing (said once, on stderr)."""
    tc = cfg.train
    if tc.keep_best and (tc.keep_best != "val_loss" or not cfg.data.val):
        raise ValueError(f"train.keep_best: only 'val_loss' is supported and it needs data.val (got {tc.keep_best!r})")
    if tc.eval_every > 0 and not cfg.data.val and process_rank() == 0:
        print(f"[skillgpt] warning: train.eval_every={tc.eval_every} but data.val is not set: no validation",
              file=sys.stderr)


def eval_due(cfg: Config, step: int, total_steps: int) -> bool:
    """Whether train.eval_every asks for a validation after optimizer step `step` (and at the last step);
    never without data.val."""
    every = cfg.train.eval_every
    return every > 0 and bool(cfg.data.val) and (step % every == 0 or step == total_steps)


@torch.no_grad()
def validation_loss(engine, loader: DataLoader, device: torch.device) -> float:
    """Mean loss over the validation loader (eval mode; the training mode is restored)."""
    engine.eval()
    total, count = 0.0, 0
    try:
        for batch in loader:
            loss = engine(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                          batch["labels"].to(device), media_to(batch["media"], device),
                          caption_embeds=batch.get("caption_embeds"))  # as trained (NExT-GPT alignment)
            total, count = total + loss.item() * len(batch["ids"]), count + len(batch["ids"])
    finally:
        engine.train()
    return total / max(count, 1)


def labelled_samples(cfg: Config) -> list[dict]:
    """The data.val samples that top-1 can score: a proficiency `label` of eval.labels and media. None for
    other eval tasks, eval.views (late fusion) or eval.self_questions (generation: too slow here)."""
    ec = cfg.eval
    if ec.task != "proficiency" or ec.views or ec.self_questions > 0:
        return []
    samples = [s for s in read_samples(cfg.data.val) if "label" in s]
    for s in samples:
        if s["label"] not in ec.labels:
            raise DataError(f"{cfg.data.val}: sample {s.get('id', '?')}: label {s['label']!r} is not one of "
                            f"eval.labels {list(ec.labels)}")
    return [s for s in samples if any(s.get(k) for k in ("video", "image", "audio"))]


class Validator:
    """Validation loss and top-1 on data.val; media are decoded once when data.cache_videos is set."""

    def __init__(self, cfg: Config, model: SkillGPT, tokenizer: Any, engine) -> None:
        assert cfg.data.val, "Validator needs data.val (check_validation_config)"
        self.cfg, self.engine = cfg, engine
        val_set = SkillDataset(cfg.data.val, cfg.data, tokenizer, llm_template(cfg.model.llm), model.placeholder_tokens(),
                               cfg.model.llm.max_length)
        self.loader = DataLoader(val_set, batch_size=cfg.train.micro_batch_size,
                                 collate_fn=partial(collate, pad_id=tokenizer.pad_token_id))
        self.samples = labelled_samples(cfg)
        self.root = Path(cfg.data.media_root) if cfg.data.media_root else Path(cfg.data.val).parent
        self.assistant = SkillAssistant.from_model(cfg, model, tokenizer, engine.device)
        self._media: dict[int, Media] = {}

    def loss(self) -> float:
        return validation_loss(self.engine, self.loader, self.engine.device)

    def _load(self, i: int) -> Media:
        media = self._media.get(i)
        if media is None:
            media = self.assistant.load(self.samples[i], self.root)
            if self.cfg.data.cache_videos:
                self._media[i] = media
        return media

    @torch.no_grad()
    def top1(self) -> Optional[dict[str, Any]]:
        """{"val_top1", "val_gold_prob", "val_n"} by label likelihood as `skillgpt eval` scores it; None
        without labelled samples."""
        if not self.samples:
            return None
        labels = list(self.cfg.eval.labels)
        self.engine.eval()
        try:
            records = [score_sample(self.assistant, s, self.assistant.encode_media(self._load(i)), labels, False)
                       for i, s in enumerate(self.samples)]
        finally:
            self.engine.train()
        summary = summarize(records, labels)
        return {"val_top1": summary["top1"], "val_gold_prob": summary["mean_gold_prob"], "val_n": summary["n"]}

    def run(self) -> dict[str, Any]:
        """Every validation metric, with the seconds it took."""
        tic = time.time()
        metrics: dict[str, Any] = {"val_loss": self.loss()}
        metrics.update(self.top1() or {})
        metrics["val_seconds"] = round(time.time() - tic, 3)
        return metrics
