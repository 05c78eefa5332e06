"""Samples from JSON (conversation or caption format) -> token ids, labels and a clip tensor."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from skillgpt.config.schema import DataConfig
from skillgpt.data.templates import count_placeholders, get_template, tokenize_conversation
from skillgpt.data.video import load_video

IGNORE_INDEX = -100


class DataError(ValueError):
    """A problem in a data file; the message names the file and the sample."""


def read_samples(json_path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON list of sample objects, failing with the file name on malformed input."""
    path = Path(json_path)
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        samples = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid UTF-8 JSON: {err}") from err
    if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
        raise DataError(f"{path}: expected a JSON list of objects")
    return samples


def to_conversation(sample: dict[str, Any], fmt: str, prompts: list[str], index: int) -> list[dict[str, str]]:
    """The sample's turns; caption pairs become one fixed-prompt question and the caption as answer."""
    if fmt == "caption":
        return [{"from": "human", "value": prompts[index % len(prompts)]}, {"from": "gpt", "value": sample["caption"]}]
    return sample["conversations"]


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]
    video: Path | None


class SkillDataset(Dataset):
    """One JSON split. Every sample is validated (fields, media present, placeholder count) up front."""

    def __init__(
        self,
        json_path: str | Path,
        cfg: DataConfig,
        tokenizer: PreTrainedTokenizerBase,
        template_name: str,
        video_tokens: int,
        max_length: int,
    ) -> None:
        self.path = Path(json_path)
        self.cfg = cfg
        self.records = read_samples(self.path)
        root = Path(cfg.media_root) if cfg.media_root else self.path.parent
        template = get_template(template_name)
        needed = "caption" if cfg.format == "caption" else "conversations"
        self.examples: list[Example] = []
        self._video_cache: dict[Path, Tensor] = {}
        missing: list[str] = []
        for i, rec in enumerate(self.records):
            sid = str(rec.get("id", f"#{i}"))
            if needed not in rec:
                raise DataError(f"{self.path}: sample {sid} has no '{needed}' field (data.format={cfg.format})")
            turns = to_conversation(rec, cfg.format, cfg.caption_prompts, i)
            video = root / rec["video"] if rec.get("video") else None
            if video is not None and not video.is_file():
                missing.append(f"{sid}: {video}")
            n_media = 0 if video is None else 1
            n_placeholders = count_placeholders(turns).get("<video>", 0)
            if n_placeholders != n_media:
                raise DataError(
                    f"{self.path}: sample {sid} has {n_placeholders} <video> placeholder(s) but {n_media} video(s)"
                )
            tok = tokenize_conversation(
                turns, tokenizer, template, {"<video>": video_tokens}, max_length, sample_id=f"{self.path}:{sid}"
            )
            self.examples.append(Example(sid, tok["input_ids"], tok["labels"], video))
        if missing:
            shown = "\n  ".join(missing[:10])
            raise DataError(f"{self.path}: {len(missing)} video file(s) not found:\n  {shown}")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.examples[index]
        video = None
        if ex.video is not None:
            video = self._video_cache.get(ex.video)
            if video is None:
                video = load_video(ex.video, self.cfg.video)
                if self.cfg.cache_videos:
                    self._video_cache[ex.video] = video
        return {"id": ex.id, "input_ids": ex.input_ids, "labels": ex.labels, "video": video}


def collate(batch: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad ids/labels; stack videos into [B, S, C, T, H, W] (all samples of a batch have one)."""
    longest = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[row, :n] = torch.tensor(b["input_ids"])
        labels[row, :n] = torch.tensor(b["labels"])
        mask[row, :n] = 1
    videos = [b["video"] for b in batch if b["video"] is not None]
    if videos and len(videos) != len(batch):
        raise DataError("a batch mixes samples with and without video; split such data into separate files")
    video: Tensor | None = torch.stack(videos) if videos else None
    return {"ids": [b["id"] for b in batch], "input_ids": ids, "attention_mask": mask, "labels": labels, "video": video}
