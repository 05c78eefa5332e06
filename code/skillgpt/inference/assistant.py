"""The one inference path (CLI infer, eval, chat, demo): load a checkpoint, rate skill, answer questions."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from skillgpt.checkpoint.delta import load_trained_parts, resolve_checkpoint
from skillgpt.config import Config, load_resolved
from skillgpt.data.dataset import collate
from skillgpt.data.media import (
    PLACEHOLDER_OF, collate_media, Payload, expand_view_placeholders, load_media, media_to, missing_files, sample_media,
)
from skillgpt.data.templates import get_template, tokenize_conversation, trim_reply
from skillgpt.data.video import MediaError
from skillgpt.models.build import build_model

Turn = dict[str, str]
Media = list[tuple[str, Payload]]  # (kind, pixels) in placeholder order


class SkillAssistant:
    """A trained SkillGPT checkpoint ready to answer. `device` defaults to CUDA when present."""

    def __init__(self, ckpt: str | Path, device: str | None = None) -> None:
        self.ckpt = resolve_checkpoint(ckpt)
        self.cfg: Config = load_resolved(self.ckpt / "config.yaml")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.tokenizer = build_model(self.cfg)
        load_trained_parts(self.model, self.ckpt)
        self.model.to(self.device).eval()
        self.template = get_template(self.cfg.model.llm.template)
        self.placeholder_tokens = self.model.placeholder_tokens()

    # ---- inputs ------------------------------------------------------------------------------
    def load(self, record: dict, root: str | Path = ".") -> Media:
        """Media of a sample-like dict (`video`, `image`, `audio` fields, paths relative to `root`),
        preprocessed exactly as in training."""
        items = sample_media(record, Path(root), self.cfg.data, f"sample {record.get('id', '')}".strip())
        absent = missing_files(items)
        if absent:
            raise MediaError(f"{absent[0]}: media file not found")
        return [(it.kind, load_media(it, self.cfg.data)) for it in items]

    def load_video(self, path: str | Path) -> Media:
        """A single video file (or, with data.views, a dict view -> path) as media."""
        return self.load({"video": path if isinstance(path, dict) else str(path)})

    def encode(self, turns: list[Turn], generation: bool) -> dict[str, list[int]]:
        turns = expand_view_placeholders(turns, self.cfg.data)
        return tokenize_conversation(
            turns, self.tokenizer, self.template, self.placeholder_tokens,
            self.cfg.model.llm.max_length, add_generation_prompt=generation,
        )

    @staticmethod
    def with_placeholders(question: str, media: Media) -> str:
        """Prefix the placeholders the question lacks, one per media item (in kind order)."""
        prefix = []
        for kind, placeholder in PLACEHOLDER_OF.items():
            missing = sum(k == kind for k, _ in media) - question.count(placeholder)
            prefix += [placeholder] * max(missing, 0)
        return " ".join(prefix + [question]) if prefix else question

    # ---- rating ------------------------------------------------------------------------------
    @torch.no_grad()
    def label_scores(self, samples: list[Media], question: str, labels: list[str]) -> Tensor:
        """Log-likelihood of each label as the answer to `question`: [len(samples), len(labels)]."""
        items = []
        for media in samples:
            q = self.with_placeholders(question, media)
            for label in labels:
                tok = self.encode([{"from": "human", "value": q}, {"from": "gpt", "value": label}], False)
                items.append({"id": label, "input_ids": tok["input_ids"], "labels": tok["labels"], "media": media})
        batch = collate(items, pad_id=self.tokenizer.pad_token_id)
        lp = self.model.sequence_logprobs(
            batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
            batch["labels"].to(self.device), media_to(batch["media"], self.device),
        )
        return lp.view(len(samples), len(labels)).float().cpu()

    def rate(self, media: Media, question: str | None = None, labels: list[str] | None = None) -> dict[str, float]:
        """Probability of each proficiency level (softmax over the label likelihoods)."""
        labels = labels or list(self.cfg.eval.labels)
        scores = self.label_scores([media], question or self.cfg.eval.question, labels)[0]
        return dict(zip(labels, scores.softmax(-1).tolist()))

    # ---- free text ---------------------------------------------------------------------------
    @torch.no_grad()
    def reply(
        self,
        turns: list[Turn],
        media: Media | None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> str:
        """Next assistant reply to `turns` (greedy when temperature == 0; KV cache on)."""
        ids = torch.tensor([self.encode(turns, True)["input_ids"]], device=self.device)
        sampling = temperature > 0
        out = self.model.generate(
            ids,
            media_to(collate_media([media]), self.device) if media else None,
            max_new_tokens=max_new_tokens,
            do_sample=sampling,
            temperature=temperature if sampling else None,
            top_p=top_p if sampling else None,
            stop_strings=self.template.stop_strings(self.tokenizer) or None,
            tokenizer=self.tokenizer,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
        )
        text = self.tokenizer.decode(out[0], skip_special_tokens=True)
        return trim_reply(self.template, text, self.tokenizer).strip()

    def ask(self, question: str, media: Media | None, **gen: float) -> str:
        """One question about some media; prefixes the placeholders the question lacks."""
        question = self.with_placeholders(question, media or [])
        return self.reply([{"from": "human", "value": question}], media, **gen)
