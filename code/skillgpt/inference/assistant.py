"""The one inference path (CLI infer, eval, chat, demo): load a checkpoint, rate skill, answer questions.

`SkillAssistant` is a thin facade: prompts come from the prompt builder (``skillgpt.data.prompt``),
label likelihoods from ``inference.scoring`` (media encoded once, shared prompt run once with a KV
cache) and free text from ``inference.generation``. A model with signal tokens (``model.generation``) can
answer with images, videos and audio: pass a `files` list to `reply` / `ask` / `stream_reply` and the reply's
media are written and listed there (``inference.media``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import torch
from torch import Tensor

from skillgpt.checkpoint.delta import load_trained_parts, resolve_checkpoint
from skillgpt.checkpoint.lineage import checkpoint_config
from skillgpt.config import Config
from skillgpt.data.media import Payload, load_media, missing_files, sample_media
from skillgpt.data.prompt import expand_view_placeholders, place_placeholders
from skillgpt.data.templates import llm_template, tokenize_conversation, trim_reply
from skillgpt.data.video import MediaError
from skillgpt.inference import generation, scoring
from skillgpt.inference.inputs import resolve_device
from skillgpt.inference.media import MediaFile, MediaMaker, SignalRunProcessor, reply_conditioning
from skillgpt.models.build import build_model

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from skillgpt.models.skill_model import SkillGPT

Turn = dict[str, str]
Media = list[tuple[str, Payload]]  # (kind, pixels or encoder features) in placeholder order


class SkillAssistant:
    """A trained SkillGPT checkpoint ready to answer. `device` defaults to CUDA when present."""

    def __init__(self, ckpt: str | Path, device: str | None = None, overrides: list[str] | None = None) -> None:
        self.ckpt = resolve_checkpoint(ckpt)
        self.cfg: Config = checkpoint_config(self.ckpt, overrides or [])  # paths and parent found from any cwd
        self.device = resolve_device(device)  # ValueError for an unknown or absent device
        self.model, self.tokenizer = build_model(self.cfg)
        load_trained_parts(self.model, self.ckpt)
        self.model.to(self.device).eval()
        self.template = llm_template(self.cfg.model.llm)
        self.placeholder_tokens = self.model.placeholder_tokens()
        self._media_maker: Optional[MediaMaker] = None

    @classmethod
    def from_model(cls, cfg: Config, model: SkillGPT, tokenizer: PreTrainedTokenizerBase,
                   device: torch.device) -> "SkillAssistant":
        """The facade over a model already in memory (e.g. the one being trained: validation scores it as
        `skillgpt eval` does); nothing is loaded, the model's mode and device are left as they are."""
        assistant = cls.__new__(cls)
        assistant.ckpt, assistant.cfg, assistant.device = Path(cfg.train.output_dir), cfg, device
        assistant.model, assistant.tokenizer = model, tokenizer
        assistant.template = llm_template(cfg.model.llm)
        assistant.placeholder_tokens = model.placeholder_tokens()
        assistant._media_maker = None
        return assistant

    # ---- media out ---------------------------------------------------------------------------
    @property
    def media_modalities(self) -> list[str]:
        """The modalities this model can answer with (its signal tokens); empty without model.generation."""
        head = getattr(self.model, "generation", None)
        return list(head.signal_ids) if head is not None else []

    @property
    def media_maker(self) -> MediaMaker:
        """The decoders of the config's `generation` section (loaded when a reply first needs one)."""
        if self._media_maker is None:
            self._media_maker = MediaMaker(self.cfg.generation, self.device)
        return self._media_maker

    def render_media(self, prompt_ids: Tensor, new_ids: Tensor, media: Optional[dict[str, Payload]],
                     prefix: str) -> list[MediaFile]:
        """The files of the signal-token runs in a reply (`new_ids` [N] after `prompt_ids` [1, T]); [] when it
        has none or the model has no signal tokens (nothing runs then)."""
        if not self.media_modalities:
            return []
        ids = torch.cat([prompt_ids, new_ids.to(prompt_ids.device).view(1, -1)], dim=1)
        conds = reply_conditioning(self.model, ids, media, reply_start=prompt_ids.shape[1])
        return self.media_maker.render(conds, prefix) if conds else []

    # ---- inputs ------------------------------------------------------------------------------
    def load(self, record: dict, root: str | Path = ".") -> Media:
        """Media of a sample-like dict (`video`, `image`, `audio` fields, paths relative to `root`),
        preprocessed exactly as in training."""
        items = sample_media(record, Path(root), self.cfg.data, f"sample {record.get('id', '')}".strip())
        absent = missing_files(items)
        if absent:
            what = "is a folder (expected a media file)" if absent[0].is_dir() else "media file not found"
            raise MediaError(f"{absent[0]}: {what}")
        return [(it.kind, load_media(it, self.cfg.data)) for it in items]

    def load_video(self, path: str | Path | dict) -> Media:
        """A single video file (or, with data.views, a dict view -> path) as media."""
        return self.load({"video": path if isinstance(path, dict) else str(path)})

    def encode_media(self, media: Media | None) -> Media:
        """`media` as encoder features: pass the result to scoring and generation to encode once."""
        return scoring.encode_media(self.model, media, self.device) if media else []

    def with_placeholders(self, question: str, media: Media | None) -> str:
        """`question` with one placeholder per media item (``skillgpt.data.prompt.place_placeholders``)."""
        return place_placeholders(question, [kind for kind, _ in media or []], self.cfg.data)

    def encode(self, turns: list[Turn], generation: bool) -> dict[str, list[int]]:
        """Token ids/labels of `turns` (views expanded), ending with the assistant prefix when `generation`."""
        return tokenize_conversation(
            expand_view_placeholders(turns, self.cfg.data), self.tokenizer, self.template, self.placeholder_tokens,
            self.cfg.model.llm.max_length, add_generation_prompt=generation,
        )

    # ---- rating ------------------------------------------------------------------------------
    @torch.no_grad()
    def label_scores(self, samples: list[Media], question: str, labels: list[str], normalize: bool = False) -> Tensor:
        """Log-likelihood of each label as the answer to `question`: [len(samples), len(labels)]; with
        `normalize`, the mean log-probability per label token instead of the sum."""
        rows = []
        for media in samples:
            q = self.with_placeholders(question, media)
            seqs = [self.encode([{"from": "human", "value": q}, {"from": "gpt", "value": label}], False)
                    for label in labels]
            rows.append(scoring.score_sequences(self.model, seqs, self.encode_media(media), self.device, normalize))
        return torch.stack(rows).float() if rows else torch.zeros(0, len(labels))

    def rate(self, media: Media, question: str | None = None, labels: list[str] | None = None) -> dict[str, float]:
        """Probability of each proficiency level (softmax over the label likelihoods)."""
        labels = labels or list(self.cfg.eval.labels)
        scores = self.label_scores([media], question or self.cfg.eval.question, labels)[0]
        return dict(zip(labels, scores.softmax(-1).tolist()))

    # ---- free text ---------------------------------------------------------------------------
    def _prompt(self, turns: list[Turn], media: Media | None, max_new_tokens: int, temperature: float,
                top_p: float) -> tuple[Tensor, dict[str, Payload] | None, dict]:
        ids = torch.tensor([self.encode(turns, True)["input_ids"]], device=self.device)
        kwargs = generation.generate_kwargs(self.template, self.tokenizer, max_new_tokens, temperature, top_p)
        if self.media_modalities:  # signal tokens come as whole runs
            from transformers import LogitsProcessorList

            processors = LogitsProcessorList(kwargs.get("logits_processor") or [])
            processors.append(SignalRunProcessor(self.model.generation.signal_ids))
            kwargs["logits_processor"] = processors
        return ids, generation.batch_media(self.encode_media(media), self.device), kwargs

    def _final_reply(self, new_ids: Tensor) -> str:
        text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        return trim_reply(self.template, text, self.tokenizer).strip()

    @torch.no_grad()
    def reply(self, turns: list[Turn], media: Media | None, max_new_tokens: int = 64, temperature: float = 0.0,
              top_p: float = 1.0, files: Optional[list[MediaFile]] = None, media_prefix: str = "answer") -> str:
        """Next assistant reply to `turns` (greedy when temperature == 0; KV cache on). With `files`, the
        media the reply asks for (its signal tokens) are generated, written as <media_prefix>-<modality>.*
        and appended there."""
        ids, batch_media, kwargs = self._prompt(turns, media, max_new_tokens, temperature, top_p)
        new_ids = generation.generate(self.model, ids, batch_media, **kwargs)[0]
        text = self._final_reply(new_ids)
        if files is not None:
            files.extend(self.render_media(ids, new_ids, batch_media, media_prefix))
        return text

    def stream_reply(self, turns: list[Turn], media: Media | None, max_new_tokens: int = 64,
                     temperature: float = 0.0, top_p: float = 1.0, timeout: float | None = 300.0,
                     files: Optional[list[MediaFile]] = None, media_prefix: str = "reply") -> Iterator[str]:
        """`reply`, streamed: yields the reply text so far (cumulative, trimmed like `reply`) as tokens
        arrive; the last value is exactly what `reply` returns (``generation.stream``). With `files`, the
        reply's media are generated after its last text and appended there."""
        ids, batch_media, kwargs = self._prompt(turns, media, max_new_tokens, temperature, top_p)
        stops = self.template.stop_strings(self.tokenizer)
        done: dict[str, Tensor] = {}

        def final(new_ids: Tensor) -> str:
            done["ids"] = new_ids
            return self._final_reply(new_ids)

        yield from generation.stream(self.model, ids, batch_media, kwargs, self.tokenizer, stops, final, timeout)
        if files is not None and "ids" in done:
            files.extend(self.render_media(ids, done["ids"], batch_media, media_prefix))

    def ask(self, question: str, media: Media | None, **gen: Any) -> str:
        """One question about some media; placeholders as the prompt builder places them."""
        return self.reply([{"from": "human", "value": self.with_placeholders(question, media)}], media, **gen)
