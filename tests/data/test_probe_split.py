"""data.probe_media split across processes: each rank decodes its share (sample i on rank i % world) and
the ranks agree on the bad files (the agreement itself runs on 2 real processes in
tests/train/test_collectives.py; here rank and world are faked)."""
from __future__ import annotations

import pytest

import skillgpt.data.dataset as dataset_module
import skillgpt.distributed as distributed
from skillgpt.data.dataset import DataError, SkillDataset
from skillgpt.data.video import MediaError
from skillgpt.models.build import build_model
from skillgpt.models.llm import load_tokenizer


def _build(ws, monkeypatch, rank: int, other_rank_bad: dict[int, str], policy: str, broken: bool = False):
    cfg = ws.config(2, "probe", "train.init_from=null", f"data.on_bad_sample={policy}", "data.cache_videos=false")
    model, _ = build_model(cfg, on_meta=True)
    tok = load_tokenizer(cfg.model.llm.path)
    decoded = []

    def load_media(item, _cfg):
        decoded.append(item)
        if broken:
            raise MediaError("cannot decode")

    monkeypatch.setattr(distributed, "rank", lambda: rank)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(dataset_module, "load_media", load_media)
    gathered = []

    def all_gather(mine):  # this rank's findings plus the other rank's
        gathered.append(mine)
        return [mine, other_rank_bad] if rank == 0 else [other_rank_bad, mine]

    monkeypatch.setattr(dataset_module, "all_gather", all_gather)
    data = SkillDataset(cfg.data.train, cfg.data, tok, cfg.model.llm.template, model.placeholder_tokens(),
                        cfg.model.llm.max_length)
    return data, decoded, gathered


def test_each_rank_decodes_its_share(tiny_workspace, monkeypatch):
    full, everything, _ = _build(tiny_workspace, monkeypatch, 0, {}, "error")
    for rank in (0, 1):
        data, decoded, gathered = _build(tiny_workspace, monkeypatch, rank, {}, "error")
        share = [it for ex in full.examples[rank::2] for it in ex.media]
        assert decoded == share and gathered == [{}] and len(data) == len(full)


def test_a_bad_file_found_by_another_rank_stops_or_drops_it_here(tiny_workspace, monkeypatch):
    full, _, _ = _build(tiny_workspace, monkeypatch, 0, {}, "error")
    problem = "skill_train.json: sample 'x', field 'video': cannot decode"
    with pytest.raises(DataError, match="cannot decode"):
        _build(tiny_workspace, monkeypatch, 0, {1: problem}, "error")
    data, _, _ = _build(tiny_workspace, monkeypatch, 0, {1: problem}, "skip")
    assert [ex.id for ex in data.examples] == [ex.id for i, ex in enumerate(full.examples) if i != 1]
    assert data.skipped == [{"id": full.examples[1].id, "problem": problem}]


def test_a_bad_file_found_here_is_shared(tiny_workspace, monkeypatch):
    full, _, _ = _build(tiny_workspace, monkeypatch, 1, {}, "skip")
    data, _, gathered = _build(tiny_workspace, monkeypatch, 1, {}, "skip", broken=True)
    assert sorted(gathered[0]) == list(range(1, len(full), 2))  # rank 1's share, all broken here
    assert [ex.id for ex in data.examples] == [ex.id for ex in full.examples[0::2]]
