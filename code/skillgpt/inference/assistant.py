"""The one inference path (CLI infer, eval, chat, demo): load a checkpoint, rate skill, answer questions."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

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

    def __init__(self, ckpt: str | Path, device: str | None = None, overrides: list[str] | None = None) -> None:
        self.ckpt = resolve_checkpoint(ckpt)
        self.cfg: Config = load_resolved(self.ckpt / "config.yaml", overrides or [])
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
        ids, batch_media, kwargs = self._generation_inputs(turns, media, max_new_tokens, temperature, top_p)
        out = self.model.generate(ids, batch_media, **kwargs)
        return self._final_reply(out[0])

    def _generation_inputs(
        self, turns: list[Turn], media: Media | None, max_new_tokens: int, temperature: float, top_p: float,
    ) -> tuple[Tensor, dict[str, Payload] | None, dict[str, Any]]:
        """Prompt ids, collated media and `generate` keyword arguments shared by `reply` and `stream_reply`."""
        ids = torch.tensor([self.encode(turns, True)["input_ids"]], device=self.device)
        sampling = temperature > 0
        kwargs: dict[str, Any] = dict(
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
        return ids, media_to(collate_media([media]), self.device) if media else None, kwargs

    def _final_reply(self, new_ids: Tensor) -> str:
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        return trim_reply(self.template, text, self.tokenizer).strip()

    def _partial_reply(self, text: str) -> str:
        """The part of a still-growing generation that is surely reply text: cut at a stop string, and hold
        back a tail that could be the start of one (and trailing whitespace, which the final strip removes)."""
        stops = [s for s in self.template.stop_strings(self.tokenizer) if s]
        cut = min([i for i in (text.find(s) for s in stops) if i != -1], default=len(text))
        text = text[:cut]
        for stop in stops:
            for k in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:k]):
                    text = text[:-k]
                    break
        return text.strip()

    def stream_reply(
        self,
        turns: list[Turn],
        media: Media | None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        top_p: float = 1.0,
        timeout: float | None = 300.0,
    ) -> Iterator[str]:
        """`reply`, streamed: yields the reply text so far (cumulative, trimmed like `reply`) as tokens arrive.

        Generation runs in a thread through `self.model.generate(..., streamer=TextIteratorStreamer)`; the
        last value yielded is exactly what `reply` returns for the same arguments (it is decoded from the
        full output ids, not from the streamed pieces). Closing the iterator early stops generation.
        An exception raised by `generate` is re-raised here."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        ids, batch_media, kwargs = self._generation_inputs(turns, media, max_new_tokens, temperature, top_p)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True)
        cancel = threading.Event()

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Tensor, scores: Tensor, **_: Any) -> Tensor:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        result: dict[str, Any] = {}

        def run() -> None:
            try:
                with torch.no_grad():
                    result["ids"] = self.model.generate(
                        ids, batch_media, streamer=streamer, stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                        **kwargs,
                    )
            except BaseException as err:  # handed to the consumer below
                result["error"] = err
                streamer.end()

        worker = threading.Thread(target=run, name="skillgpt-generate", daemon=True)
        worker.start()
        text, shown = "", ""
        try:
            for piece in streamer:
                text += piece
                partial = self._partial_reply(text)
                if partial != shown:
                    shown = partial
                    yield shown
        finally:
            cancel.set()
            worker.join()
        if "error" in result:
            raise result["error"]
        final = self._final_reply(result["ids"][0])
        if final != shown or not shown:
            yield final

    def ask(self, question: str, media: Media | None, **gen: float) -> str:
        """One question about some media; prefixes the placeholders the question lacks."""
        question = self.with_placeholders(question, media or [])
        return self.reply([{"from": "human", "value": question}], media, **gen)
