"""Feature cache storage: round trip, content-keyed entries, signatures, resumable writes, corruption."""
from __future__ import annotations

import json

import pytest
import torch

from skillgpt.data.feature_cache import CacheError, FeatureCache

SIG = {"branches": {"video": {"settings": {"pool": 4}, "weights": []}}, "video": {"num_clips": 8}}


def _media(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_round_trip_across_shards(tmp_path):
    cache = FeatureCache(tmp_path / "c", SIG, shard_size=2)
    feats = {}
    for i in range(5):
        key = cache.key(_media(tmp_path, f"{i}.mp4", f"clip {i}".encode()))
        feats[key] = {"video": torch.randn(3, 4), "context": torch.randn(2, 5)}
        cache.put(key, feats[key])
    cache.flush()
    again = FeatureCache(tmp_path / "c", SIG)
    assert len(again) == 5 and len(list(again.dir.glob("shard-*.safetensors"))) == 3
    again.verify()
    for key, parts in feats.items():
        got = again.get(key)
        assert set(got) == {"video", "context"}
        for branch, t in parts.items():
            torch.testing.assert_close(got[branch], t, rtol=0, atol=0)


def test_key_follows_content_not_name(tmp_path):
    cache = FeatureCache(tmp_path / "c", SIG)
    a = _media(tmp_path, "a.mp4", b"same bytes")
    b = _media(tmp_path, "b.mp4", b"same bytes")
    assert cache.key(a) == cache.key(b)
    before = cache.key(a)
    a.write_bytes(b"edited bytes, different length")
    assert cache.key(a) != before  # an edited file never reuses old features


def test_every_signature_setting_gets_its_own_folder(tmp_path):
    base = FeatureCache(tmp_path / "c", SIG)
    for changed in (
        {**SIG, "video": {"num_clips": 4}},
        {**SIG, "branches": {"video": {"settings": {"pool": 2}, "weights": []}}},
        {**SIG, "branches": {"video": {"settings": {"pool": 4}, "weights": ["abc"]}}},
    ):
        assert FeatureCache(tmp_path / "c", changed).dir != base.dir


def test_interrupted_write_keeps_finished_shards(tmp_path):
    cache = FeatureCache(tmp_path / "c", SIG, shard_size=2)
    keys = [cache.key(_media(tmp_path, f"{i}.mp4", bytes([i]) * 10)) for i in range(3)]
    for k in keys:
        cache.put(k, {"video": torch.ones(1, 2)})
    # "killed" before the final flush: the first shard of 2 is on disk, the third entry is not
    resumed = FeatureCache(tmp_path / "c", SIG, shard_size=2)
    assert resumed.missing(keys) == keys[2:]
    resumed.put(keys[2], {"video": torch.ones(1, 2)})
    resumed.flush()
    assert FeatureCache(tmp_path / "c", SIG).missing(keys) == []


def test_corrupt_shard_is_reported_with_its_path(tmp_path):
    cache = FeatureCache(tmp_path / "c", SIG)
    key = cache.key(_media(tmp_path, "a.mp4", b"abc"))
    cache.put(key, {"video": torch.zeros(4, 4)})
    cache.flush()
    shard = next(cache.dir.glob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    fresh = FeatureCache(tmp_path / "c", SIG)
    with pytest.raises(CacheError, match=str(shard)):
        fresh.get(key)
    with pytest.raises(CacheError, match="corrupt"):
        fresh.verify()


def test_damaged_index_is_reported(tmp_path):
    cache = FeatureCache(tmp_path / "c", SIG)
    cache.put(cache.key(_media(tmp_path, "a.mp4", b"abc")), {"video": torch.zeros(1)})
    cache.flush()
    (cache.dir / "index.json").write_text("{not json")
    with pytest.raises(CacheError, match="index.json"):
        FeatureCache(tmp_path / "c", SIG)
    (cache.dir / "index.json").write_text(json.dumps({"shards": {}, "entries": {}}))
    (cache.dir / "signature.json").write_text(json.dumps({"other": 1}))
    with pytest.raises(CacheError, match="signature.json"):
        FeatureCache(tmp_path / "c", SIG)


def test_verify_checks_this_ranks_share_and_reports_the_agreed_problem(tmp_path, monkeypatch):
    """Shard i is checked by rank i % world only; the problem the ranks agree on is raised (the agreement
    itself runs on 2 real processes in tests/train/test_collectives.py)."""
    import skillgpt.data.feature_cache as feature_cache
    import skillgpt.distributed as distributed

    cache = FeatureCache(tmp_path / "c", SIG, shard_size=1)
    for i in range(3):
        cache.put(cache.key(_media(tmp_path, f"{i}.mp4", bytes([i]) * 8)), {"video": torch.zeros(2)})
    cache.flush()
    shards = sorted(cache.dir.glob("shard-*.safetensors"))
    shards[1].write_bytes(shards[1].read_bytes()[:-4] + b"oops")
    agreed = []
    monkeypatch.setattr(feature_cache, "first_failure", lambda problem: agreed.append(problem) or problem)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    for rank, expect_bad in ((0, False), (1, True)):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        fresh = FeatureCache(tmp_path / "c", SIG)
        if expect_bad:
            with pytest.raises(CacheError, match=str(shards[1])):
                fresh.verify()
        else:
            fresh.verify()
        assert sorted(fresh._loaded) == [p.name for p in shards[rank::2] if p != shards[1]]
    assert agreed[0] is None and "corrupt" in agreed[1]
