"""Helpers shared by the model tests."""
from __future__ import annotations

from typing import Any, Callable

import pytest

from skillgpt.data.dataset import SkillDataset, collate
from skillgpt.models.build import build_model


def _first_batch(cfg: Any, size: int | None = None) -> tuple[Any, Any, Any, dict]:
    """Build `cfg`'s model and tokenizer and collate the first `size` samples of data.train (all when None):
    (model, tokenizer, dataset, batch)."""
    model, tok = build_model(cfg)
    ds = SkillDataset(cfg.data.train, cfg.data, tok, cfg.model.llm.template, model.placeholder_tokens(),
                      cfg.model.llm.max_length)
    batch = collate([ds[i] for i in range(len(ds) if size is None else size)], tok.pad_token_id)
    return model, tok, ds, batch


@pytest.fixture
def first_batch() -> Callable[..., tuple[Any, Any, Any, dict]]:
    """`first_batch(cfg, size=None)`: (model, tokenizer, dataset, batch) of data.train's first samples."""
    return _first_batch
