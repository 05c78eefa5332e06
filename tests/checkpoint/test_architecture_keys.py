"""Settings that change the token layout a checkpoint was trained on are architecture settings."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from skillgpt.checkpoint.delta import check_architecture
from skillgpt.config.schema import Config


def _cfg(**video) -> Config:
    cfg = Config()
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, video=dataclasses.replace(cfg.data.video,
                                                                                                 **video)))


def test_a_checkpoint_trained_with_other_crops_is_refused() -> None:
    """num_crops: 3 triples the clip_tokens of every video: a one-crop checkpoint never saw that layout."""
    with pytest.raises(ValueError, match=r"another architecture: data\.video\.num_crops \(1 in the checkpoint, 3 here\)"):
        check_architecture(_cfg(num_crops=1), _cfg(num_crops=3), Path("ckpt"))
    check_architecture(_cfg(num_crops=3), _cfg(num_crops=3), Path("ckpt"))  # same layout: accepted
    check_architecture(_cfg(), _cfg(resolution=336), Path("ckpt"))  # pixels, not layout: accepted
