"""The one inference path (CLI infer, eval, chat, demo): load a checkpoint, rate skill, answer questions."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from skillgpt.checkpoint.delta import load_trained_parts, resolve_checkpoint
from skillgpt.config import Config, load_resolved
from skillgpt.data.dataset import collate
from skillgpt.data.templates import get_template, tokenize_conversation, trim_reply
from skillgpt.data.video import load_video
from skillgpt.models.build import build_model

Turn = dict[str, str]


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
        self.video_tokens = self.model.num_visual_tokens(self.cfg.data.video.num_clips)

    # ---- inputs ------------------------------------------------------------------------------
    def load_video(self, path: str | Path) -> Tensor:
        """Clip tensor [S, C, T, H, W] preprocessed exactly as in training."""
        return load_video(path, self.cfg.data.video)

    def encode(self, turns: list[Turn], generation: bool) -> dict[str, list[int]]:
        return tokenize_conversation(
            turns, self.tokenizer, self.template, {"<video>": self.video_tokens},
            self.cfg.model.llm.max_length, add_generation_prompt=generation,
        )

    # ---- rating ------------------------------------------------------------------------------
    @torch.no_grad()
    def label_scores(self, videos: list[Tensor], question: str, labels: list[str]) -> Tensor:
        """Log-likelihood of each label as the answer to `question`: [len(videos), len(labels)]."""
        items = []
        for video in videos:
            for label in labels:
                tok = self.encode([{"from": "human", "value": question}, {"from": "gpt", "value": label}], False)
                items.append({"id": label, "input_ids": tok["input_ids"], "labels": tok["labels"], "video": video})
        batch = collate(items, pad_id=self.tokenizer.pad_token_id)
        lp = self.model.sequence_logprobs(
            batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
            batch["labels"].to(self.device), batch["video"].to(self.device),
        )
        return lp.view(len(videos), len(labels)).float().cpu()

    def rate(self, video: Tensor, question: str | None = None, labels: list[str] | None = None) -> dict[str, float]:
        """Probability of each proficiency level (softmax over the label likelihoods)."""
        labels = labels or list(self.cfg.eval.labels)
        scores = self.label_scores([video], question or self.cfg.eval.question, labels)[0]
        return dict(zip(labels, scores.softmax(-1).tolist()))

    # ---- free text ---------------------------------------------------------------------------
    @torch.no_grad()
    def reply(
        self,
        turns: list[Turn],
        video: Tensor | None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
    ) -> str:
        """Next assistant reply to `turns` (greedy when temperature == 0; KV cache on)."""
        ids = torch.tensor([self.encode(turns, True)["input_ids"]], device=self.device)
        sampling = temperature > 0
        out = self.model.generate(
            ids,
            video.unsqueeze(0).to(self.device) if video is not None else None,
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

    def ask(self, question: str, video: Tensor | None, **gen: float) -> str:
        """One question about one video; prefixes `<video>` when the question lacks it."""
        if video is not None and "<video>" not in question:
            question = f"<video> {question}"
        return self.reply([{"from": "human", "value": question}], video, **gen)
