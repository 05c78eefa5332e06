"""Dataset catalog and weighted mixtures."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from skillgpt.cli import main
from skillgpt.data.mixture import MixtureDataset, build_train_dataset, load_catalog
from skillgpt.models.build import build_model

REPO = Path(__file__).resolve().parents[2]


def _catalog(ws, tmp_path: Path) -> Path:
    path = tmp_path / "datasets.yaml"
    path.write_text(f"""
skill:
  format: conversation
  train: {ws.data}/skill_train.json
captions:
  format: caption
  train: {ws.data}/captions_train.json
""")
    return path


def test_catalog_errors_name_the_file_and_entry(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("a:\n  formt: caption\n")
    with pytest.raises(ValueError, match=r"c.yaml: dataset a: .*formt"):
        load_catalog(bad)
    bad.write_text("a:\n  format: video\n")
    with pytest.raises(ValueError, match="c.yaml: dataset a: format must be"):
        load_catalog(bad)
    with pytest.raises(FileNotFoundError, match="data.catalog"):
        load_catalog(tmp_path / "none.yaml")


def test_mixture_combines_formats_with_per_epoch_weights(tiny_workspace, tmp_path):
    cat = _catalog(tiny_workspace, tmp_path)
    cfg = tiny_workspace.config(2, "mix", "train.init_from=null", f"data.catalog={cat}",
                                "data.mixture={skill: 1.0, captions: 0.5}")
    model, tok = build_model(cfg)
    ds = build_train_dataset(cfg, tok, model.placeholder_tokens())
    assert isinstance(ds, MixtureDataset) and ds.names == ["skill", "captions"]
    n_skill, n_cap = (len(d) for d in ds.datasets)
    assert ds.epoch_size() == n_skill + round(0.5 * n_cap)
    order = ds.epoch_order(seed=1, epoch=0)
    part = Counter(i >= n_skill for i in order)
    assert part[False] == n_skill and part[True] == round(0.5 * n_cap) and len(set(order)) == len(order)
    assert order == ds.epoch_order(seed=1, epoch=0) != ds.epoch_order(seed=1, epoch=1)
    cfg.data.mixture = {"skill": 2.0}
    twice = build_train_dataset(cfg, tok, model.placeholder_tokens()).epoch_order(seed=1, epoch=0)
    assert Counter(Counter(twice).values()) == {2: n_skill}  # weight 2: every sample twice per epoch
    cfg.data.mixture = {"nope": 1.0}
    with pytest.raises(ValueError, match="data.mixture.nope: no such dataset"):
        build_train_dataset(cfg, tok, model.placeholder_tokens())


def test_train_runs_on_a_mixture_without_data_train(tiny_workspace, tmp_path):
    cat = _catalog(tiny_workspace, tmp_path)
    args = [a for a in tiny_workspace.overrides(2, "mixrun", "train.init_from=null") if not a.startswith("data.train=")]
    assert main(["train", str(REPO / "config" / "stage_2.yaml"), *args, f"data.catalog={cat}",
                 "data.mixture={skill: 1.0, captions: 1.0}", "train.max_steps=1"]) == 0
    assert (tiny_workspace.root / "mixrun" / "stage_2" / "checkpoint-1" / "COMPLETE").is_file()
