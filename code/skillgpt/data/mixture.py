"""Dataset catalog and weighted mixtures: named datasets in YAML, combined per stage by `data.mixture`.

A catalog (``data.catalog``, e.g. ``config/datasets.yaml``) names datasets::

    synthetic_skill:
      format: conversation          # conversation | caption
      media_root: null              # default: the JSON file's folder
      train: data/synthetic/skill_train.json
      val: data/synthetic/skill_val.json
      test: data/synthetic/skill_test.json

``data.mixture: {synthetic_skill: 1.0, other: 0.5}`` trains on the named datasets' train files; each
epoch draws ``round(weight * size)`` samples of a dataset (a permutation, cycled when weight > 1), so
weights are per-epoch multipliers. Adding a dataset in a known format is a catalog entry, no code.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch.utils.data import ConcatDataset

from skillgpt.config.schema import Config
from skillgpt.data.dataset import SkillDataset
from skillgpt.data.templates import llm_template


@dataclass
class CatalogEntry:
    format: str = "conversation"
    media_root: Optional[str] = None
    train: Optional[str] = None
    val: Optional[str] = None
    test: Optional[str] = None


def load_catalog(path: str | Path) -> dict[str, CatalogEntry]:
    """Read a catalog YAML; unknown keys, wrong types and bad formats fail naming the file and entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.catalog: {path} not found")
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of dataset names to entries")
    out = {}
    for name, entry in raw.items():
        try:
            merged = OmegaConf.merge(OmegaConf.structured(CatalogEntry), entry or {})
            out[str(name)] = OmegaConf.to_object(merged)
        except OmegaConfBaseException as err:
            raise ValueError(f"{path}: dataset {name}: {err.msg if hasattr(err, 'msg') else err}") from None
        if out[str(name)].format not in ("conversation", "caption"):
            raise ValueError(f"{path}: dataset {name}: format must be conversation or caption, got {out[name].format!r}")
    return out


class MixtureDataset(ConcatDataset):
    """Several SkillDatasets with per-epoch sampling weights."""

    def __init__(self, parts: dict[str, SkillDataset], weights: dict[str, float]) -> None:
        super().__init__(list(parts.values()))
        self.names = list(parts)
        self.weights = [float(weights[n]) for n in self.names]

    @property
    def features(self) -> Any:
        return self.datasets[0].features

    @features.setter
    def features(self, value: Any) -> None:
        for part in self.datasets:
            part.features = value

    def set_epoch(self, epoch: int, seed: int) -> None:
        for part in self.datasets:
            part.set_epoch(epoch, seed)

    @property
    def augment(self) -> Any:
        return self.datasets[0].augment

    @augment.setter
    def augment(self, value: Any) -> None:
        for part in self.datasets:
            part.augment = value

    def group_keys(self) -> list[tuple]:
        return [k for part in self.datasets for k in part.group_keys()]

    @property
    def skipped(self) -> list[dict[str, str]]:
        return [s for part in self.datasets for s in part.skipped]

    def media_items(self) -> list:
        return [it for part in self.datasets for it in part.media_items()]

    def epoch_size(self) -> int:
        return sum(round(w * len(d)) for w, d in zip(self.weights, self.datasets))

    def epoch_order(self, seed: int, epoch: int) -> list[int]:
        """Global indices of one epoch: each part's weighted draw, then one shuffle (seeded)."""
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        picked: list[int] = []
        for offset, weight, part in zip([0, *self.cumulative_sizes[:-1]], self.weights, self.datasets):
            want, n = round(weight * len(part)), len(part)
            while want > 0:
                take = min(want, n)
                picked += [offset + int(i) for i in torch.randperm(n, generator=g)[:take]]
                want -= take
        return [picked[int(i)] for i in torch.randperm(len(picked), generator=g)]


def build_train_dataset(cfg: Config, tokenizer: Any, placeholder_tokens: dict[str, int]) -> SkillDataset | MixtureDataset:
    """`data.train`, or the `data.mixture` of catalog datasets when one is given."""
    make = lambda path, data_cfg: SkillDataset(  # noqa: E731
        path, data_cfg, tokenizer, llm_template(cfg.model.llm), placeholder_tokens, cfg.model.llm.max_length,
        labels=list(cfg.eval.labels))
    if not cfg.data.mixture:
        if not cfg.data.train:
            raise ValueError("data.train: set a training file (or data.mixture with data.catalog)")
        return make(cfg.data.train, cfg.data)
    if not cfg.data.catalog:
        raise ValueError("data.mixture needs data.catalog (the YAML file that names the datasets)")
    catalog = load_catalog(cfg.data.catalog)
    parts = {}
    for name, weight in cfg.data.mixture.items():
        if name not in catalog:
            raise ValueError(f"data.mixture.{name}: no such dataset in {cfg.data.catalog} (has {sorted(catalog)})")
        if weight <= 0:
            raise ValueError(f"data.mixture.{name}: weight must be > 0, got {weight}")
        entry = catalog[name]
        if not entry.train:
            raise ValueError(f"{cfg.data.catalog}: dataset {name} has no train file")
        parts[name] = make(entry.train, dataclasses.replace(cfg.data, format=entry.format, media_root=entry.media_root))
    return MixtureDataset(parts, dict(cfg.data.mixture))
