"""Samples from JSON (conversation or caption format) -> token ids, labels and a clip tensor."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from skillgpt.config.schema import AugmentConfig, DataConfig
from skillgpt.constants import IGNORE_INDEX
from skillgpt.data.augment import AugmentParams, apply_spatial, draw_params, sample_generator
from skillgpt.data.checks import Problem, check_sample, missing_media, to_conversation, tokenize_sample
from skillgpt.data.templates import get_template
from skillgpt.data.video import MediaError
from skillgpt.data.media import DataError, MediaItem, Payload, collate_media, load_media
from skillgpt.distributed import all_gather, work_share

if TYPE_CHECKING:
    from skillgpt.data.cached_features import CachedFeatures

__all__ = ["DataError", "SkillDataset", "collate", "read_samples", "to_conversation"]



def read_json_list(json_path: str | Path, error: type[ValueError] = DataError) -> list[Any]:
    """A JSON list from a file; `error` naming the file when it is missing, not UTF-8 JSON or not a list."""
    path = Path(json_path)
    if not path.is_file():
        raise error(f"{path}: data file not found")
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(f"{path}: not valid UTF-8 JSON: {err}") from err
    if not isinstance(items, list):
        raise error(f"{path}: expected a JSON list, got {type(items).__name__}")
    return items


def read_samples(json_path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON list of sample objects, failing with the file name on malformed input."""
    path = Path(json_path)
    samples = read_json_list(path)
    if not all(isinstance(s, dict) for s in samples):
        raise DataError(f"{path}: expected a JSON list of objects")
    return samples


def _refusal(problems: list[Problem]) -> DataError:
    """One line for a refused sample: file, sample id and field of the first problem, then the others."""
    first, rest = problems[0], problems[1:]
    return DataError(str(first) + "".join(f"; field '{p.field}': {p.message}" for p in rest))


@dataclass
class Example:
    id: str
    input_ids: list[int]
    labels: list[int]
    media: list[MediaItem]
    scenario: Optional[str] = None
    generate: Optional[tuple[str, str]] = None  # (modality, caption): NExT-GPT stage-2 alignment target


class SkillDataset(Dataset):
    """One JSON split. Every sample is validated up front (fields, label, media present and decodable,
    placeholder counts, length); bad ones stop construction (`data.on_bad_sample: error`) or are dropped
    and listed in `skipped` (`skip`), so nothing fails mid-epoch.

    `placeholder_tokens` maps each placeholder to its token count (``SkillGPT.placeholder_tokens()``);
    with `features` (a ``CachedFeatures``), items return cached encoder features instead of pixels.
    """

    def __init__(
        self,
        json_path: str | Path,
        cfg: DataConfig,
        tokenizer: PreTrainedTokenizerBase,
        template_name: str,
        placeholder_tokens: dict[str, int],
        max_length: int,
        features: Optional["CachedFeatures"] = None,
        labels: Optional[list[str]] = None,
    ) -> None:
        self.path = Path(json_path)
        self.cfg = cfg
        self.records = read_samples(self.path)
        self.root = Path(cfg.media_root) if cfg.media_root else self.path.parent
        self.template = get_template(template_name)
        self.examples: list[Example] = []
        self._media_cache: dict[MediaItem, Tensor] = {}
        self.skipped: list[dict[str, str]] = []  # data.on_bad_sample=skip: {"id", "problem"} per dropped sample
        problems: list[tuple[str, str]] = []
        self._media_fields: list[tuple[str, list[tuple[str, MediaItem]]]] = []  # (id, media fields) per example
        for i, rec in enumerate(tqdm(self.records, desc=f"check {self.path.name}", disable=len(self.records) < 500)):
            sid = str(rec.get("id", f"#{i}"))
            try:
                self.examples.append(self._example(i, rec, tokenizer, placeholder_tokens, max_length, labels))
            except (DataError, MediaError, ValueError) as err:
                problems.append((sid, str(err)))
        if cfg.probe_media:
            problems += self._probe_media()
        if problems and cfg.on_bad_sample == "error":
            shown = "\n  ".join(p for _, p in problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise DataError(f"{self.path}: {len(problems)} bad sample(s) (data.on_bad_sample=error; "
                            f"`skip` drops and lists them instead):\n  {shown}{more}")
        self.skipped = [{"id": sid, "problem": p} for sid, p in problems]
        if not self.examples:
            raise DataError(f"{self.path}: no usable samples ({len(problems)} skipped)")
        self.features = features
        self.captions = self._caption_caches()
        self.augment: Optional[AugmentConfig] = None  # set by training (never in eval); see set_epoch
        self.seed, self.epoch = 0, 0

    def _example(self, i: int, rec: dict[str, Any], tokenizer: PreTrainedTokenizerBase,
                 placeholder_tokens: dict[str, int], max_length: int, labels: Optional[list[str]]) -> Example:
        """Check one record: the shared checks (``skillgpt.data.checks``: fields, label, media fields,
        placeholders), then media files present and length; `_probe_media` decodes them afterwards."""
        cfg, file = self.cfg, str(self.path)
        checked = check_sample(rec, i, cfg, file, self.root, labels)
        problems = checked.errors + missing_media(checked, file)
        if problems:  # the fields only evaluation reads (checked.metadata) do not stop training
            raise _refusal(problems)
        tok, problem = tokenize_sample(checked, cfg.format, file, tokenizer, self.template, placeholder_tokens,
                                       max_length)
        if problem is not None:
            raise _refusal([problem])
        assert tok is not None  # tokenize_sample returns ids whenever it finds no problem
        self._media_fields.append((checked.sid, checked.media))  # decoded by _probe_media
        return Example(checked.sid, tok["input_ids"], tok["labels"], [it for _, it in checked.media],
                       rec.get("scenario"), self._generate_field(rec, checked.sid))

    def _generate_field(self, rec: dict[str, Any], sid: str) -> Optional[tuple[str, str]]:
        """A sample's "generate" field (NExT-GPT stage 2): (modality, caption), checked against data.caption_cache."""
        if "generate" not in rec:
            return None
        value, where = rec["generate"], f"{self.path}: sample {sid}: field 'generate'"
        if not isinstance(value, dict) or not isinstance(value.get("caption"), str) or not value["caption"].strip():
            raise DataError(f"{where}: expected {{\"modality\": image|video|audio, \"caption\": text}}, got {value!r}")
        if value.get("modality") not in self.cfg.caption_cache:
            raise DataError(f"{where}: modality {value.get('modality')!r} has no data.caption_cache folder "
                            f"(set data.caption_cache.{value.get('modality')}=DIR; have {sorted(self.cfg.caption_cache)})")
        return value["modality"], value["caption"]

    def _caption_caches(self) -> dict[str, Any]:
        """The caption-embedding caches of data.caption_cache; every sample's caption must be in its cache."""
        if not any(ex.generate for ex in self.examples):
            return {}
        from skillgpt.generation.caption_cache import load_caption_embeddings

        caches = {m: load_caption_embeddings(Path(d)) for m, d in self.cfg.caption_cache.items()}
        missing = [ex.id for ex in self.examples if ex.generate and ex.generate[1] not in caches[ex.generate[0]]]
        if missing:
            raise DataError(f"{self.path}: {len(missing)} sample(s) whose 'generate' caption is not in "
                            f"data.caption_cache (run skillgpt cache-caption-embeddings on this file first): {missing[:5]}")
        return caches

    def _probe_media(self) -> list[tuple[str, str]]:
        """data.probe_media: decode every media file now (a broken file fails here, not mid-epoch), each
        process its share (example i on rank i % world). The ranks agree on the bad ones, so every rank
        keeps the same examples and reports the same problems. Returns (sample id, problem) of the dropped."""
        bad: dict[int, str] = {}
        for i in work_share(range(len(self.examples))):
            sid, fields = self._media_fields[i]
            for fld, it in fields:
                try:
                    pixels = load_media(it, self.cfg)
                except MediaError as err:
                    bad[i] = str(Problem(str(self.path), sid, fld, str(err)))
                    break
                if self.cfg.cache_videos:
                    self._media_cache[it] = pixels
        agreed = {i: problem for share in all_gather(bad) for i, problem in share.items()}
        self.examples = [ex for i, ex in enumerate(self.examples) if i not in agreed]
        return [(self._media_fields[i][0], agreed[i]) for i in sorted(agreed)]

    def set_epoch(self, epoch: int, seed: int) -> None:
        """Augmented samples depend on (seed, epoch, index) only, so resumed runs see the same ones."""
        self.epoch, self.seed = epoch, seed

    def group_keys(self) -> list[tuple]:
        """(media kinds, length) per sample, for length-grouped batching."""
        return [(tuple(it.kind for it in ex.media), len(ex.input_ids)) for ex in self.examples]

    def media_items(self) -> list[MediaItem]:
        """Every media item of the split (for `skillgpt cache-features`)."""
        return [it for ex in self.examples for it in ex.media]

    def _payload(self, item: MediaItem, params: Optional[AugmentParams] = None) -> Payload:
        if self.features is not None:
            return self.features.lookup(item)
        if params is not None and params.start_shifts is not None and item.kind == "video":
            pixels = load_media(item, self.cfg, params.start_shifts)  # jittered clips are never cached
        else:
            pixels = self._media_cache.get(item)
            if pixels is None:
                pixels = load_media(item, self.cfg)
                if self.cfg.cache_videos:
                    self._media_cache[item] = pixels
        if params is not None and item.kind in ("video", "image"):
            pixels = apply_spatial(pixels, params)
        return pixels

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        ex = self.examples[index]
        params: list[Optional[AugmentParams]] = [None] * len(ex.media)
        if self.augment is not None and self.augment.enabled:
            g = sample_generator(self.seed, self.epoch, index)
            params = [draw_params(self.augment, self.cfg.video, ex.scenario, g) for _ in ex.media]
        media = [(it.kind, self._payload(it, p)) for it, p in zip(ex.media, params)]
        item = {"id": ex.id, "input_ids": ex.input_ids, "labels": ex.labels, "media": media}
        if ex.generate is not None:
            item["generate"] = (ex.generate[0], self.captions[ex.generate[0]][ex.generate[1]])
        return item


def collate(batch: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Right-pad ids/labels; stack each kind's media over the batch (``collate_media``)."""
    longest = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    for row, b in enumerate(batch):
        n = len(b["input_ids"])
        ids[row, :n] = torch.tensor(b["input_ids"])
        labels[row, :n] = torch.tensor(b["labels"])
        mask[row, :n] = 1
    media = collate_media([b["media"] for b in batch])
    out = {"ids": [b["id"] for b in batch], "input_ids": ids, "attention_mask": mask, "labels": labels, "media": media}
    targets: dict[str, tuple[list[int], list[Tensor]]] = {}
    for row, b in enumerate(batch):
        if "generate" in b:
            rows, embeds = targets.setdefault(b["generate"][0], ([], []))
            rows.append(row)
            embeds.append(b["generate"][1])
    if targets:  # {modality: (rows, caption embeddings [n, T, D])} for SkillGPT.forward
        out["caption_embeds"] = {m: (torch.tensor(r), torch.stack(e)) for m, (r, e) in targets.items()}
    return out
