"""The feature cache in use: `skillgpt cache-features`, identical training inputs, invalidation, refusal."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skillgpt.cli import main
from skillgpt.data.cached_features import cache_dir_for, open_features
from skillgpt.data.dataset import SkillDataset, collate
from skillgpt.data.feature_cache import CacheError
from skillgpt.models.build import build_model

SMALL = ["data.video.num_clips=2"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def filled(tiny_workspace, tmp_path_factory):
    cache = tmp_path_factory.mktemp("features")
    args = tiny_workspace.overrides(2, "cache", "train.init_from=null", f"data.feature_cache={cache}", *SMALL)
    assert main(["cache-features", "--config", str(REPO / "config" / "stage_2.yaml"), "--splits", "train,val",
                 *args]) == 0
    return cache


def _setup(ws, cache, *extra):
    cfg = ws.config(2, "cache", "train.init_from=null", f"data.feature_cache={cache}", *SMALL, *extra)
    model, tok = build_model(cfg)
    ds = SkillDataset(cfg.data.train, cfg.data, tok, cfg.model.llm.template, model.placeholder_tokens(),
                      cfg.model.llm.max_length)
    return cfg, model, tok, ds


def test_cached_features_give_the_same_loss_as_online_encoding(tiny_workspace, filled):
    cfg, model, tok, ds = _setup(tiny_workspace, filled, "data.feature_cache_mode=require")
    online = collate([ds[i] for i in range(4)], tok.pad_token_id)
    ds.features = open_features(cfg, model, ds.media_items(), "train")
    assert ds.features is not None
    cached = collate([ds[i] for i in range(4)], tok.pad_token_id)
    assert isinstance(cached["media"]["video"], dict) and set(cached["media"]["video"]) == {"video"}
    model.eval()
    with torch.no_grad():
        a = model(online["input_ids"], online["attention_mask"], online["labels"], online["media"])
        b = model(cached["input_ids"], cached["attention_mask"], cached["labels"], cached["media"])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_settings_that_do_not_change_features_keep_the_cache(tiny_workspace, filled):
    for extra in ("train.lr=0.5", "model.projector.name=linear", "model.llm.lora.r=4"):
        cfg, model, _, ds = _setup(tiny_workspace, filled, "data.feature_cache_mode=require", extra)
        assert open_features(cfg, model, ds.media_items(), "train") is not None, extra


@pytest.mark.parametrize("extra", [
    "model.encoder.init_seed=1", "model.encoder.pool=2", "model.encoder.keep_cls=false",
    "data.video.num_clips=3", "data.video.resolution=48",
    "data.video.clip_duration=0.5", "data.video.frames_per_clip=3", "model.encoder.dtype=bfloat16",
    "data.video.num_crops=3",
])
def test_every_feature_setting_invalidates(tiny_workspace, filled, extra):
    cfg, model, _, ds = _setup(tiny_workspace, filled, extra)
    with pytest.warns(UserWarning, match="not cached"):
        assert open_features(cfg, model, ds.media_items(), "train") is None  # auto: falls back to online
    cfg.data.feature_cache_mode = "require"
    with pytest.raises(CacheError, match="cache-features"):
        open_features(cfg, model, ds.media_items(), "train")


def _train_bf16(ws, monkeypatch, run: str, *extra: str) -> tuple[list[float], list[tuple]]:
    """2 stage-2 steps with train.precision=bf16; returns the losses and, per encoder call, the dtypes of
    (encoder weights, encoder output, LLM weights) at that moment."""
    import json

    from skillgpt.train import loop

    cfg = ws.config(2, run, "train.init_from=null", *SMALL, "train.precision=bf16", "train.max_steps=2",
                    "train.eval_every=0", *extra)  # training steps only: validation decodes val clips itself
    seen, build = [], loop.build_model

    def build_and_watch(cfg):
        model, tok = build(cfg)
        model.encoder["video"].register_forward_hook(lambda m, _args, out: seen.append(
            (next(m.parameters()).dtype, out.dtype, next(model.llm.parameters()).dtype)))
        return model, tok

    monkeypatch.setattr(loop, "build_model", build_and_watch)
    loop.train(cfg)
    lines = (Path(cfg.train.output_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines], seen


def test_bf16_training_keeps_the_declared_encoder_dtype_and_matches_cached_features(tiny_workspace, filled,
                                                                                   monkeypatch):
    """DeepSpeed's bf16 casts the module it wraps; the frozen encoder stays out of it, in model.encoder.dtype
    (float32, as eval and the cache use), so cached-feature training equals online training."""
    online, seen = _train_bf16(tiny_workspace, monkeypatch, "bf16-online")
    assert seen and all(s == (torch.float32, torch.float32, torch.bfloat16) for s in seen), seen
    cached, seen = _train_bf16(tiny_workspace, monkeypatch, "bf16-cached", f"data.feature_cache={filled}",
                               "data.feature_cache_mode=require")
    assert not seen  # the encoder never ran: features came from the cache
    assert cached == online


def test_zero3_keeps_the_encoder_whole_and_in_its_declared_dtype(tiny_workspace, monkeypatch):
    _, seen = _train_bf16(tiny_workspace, monkeypatch, "bf16-zero3", f"train.deepspeed_config={REPO}/dsconfig/zero3.json")
    assert seen and all(s[:2] == (torch.float32, torch.float32) for s in seen), seen


def test_a_new_video_preprocessing_invalidates(tiny_workspace, filled, monkeypatch):
    """Features cached from pixels that load_video no longer produces are not reused."""
    import skillgpt.data.cached_features as cached

    monkeypatch.setattr(cached, "PREPROCESSING", cached.PREPROCESSING + "-changed")
    cfg, model, _, ds = _setup(tiny_workspace, filled)
    with pytest.warns(UserWarning, match="not cached"):
        assert open_features(cfg, model, ds.media_items(), "train") is None


def test_edited_media_file_is_not_served_stale(tiny_workspace, filled, tmp_path):
    import json
    import shutil

    samples = json.loads((tiny_workspace.data / "skill_train.json").read_text())[:2]
    for s in samples:
        copy = tmp_path / f"{s['id']}.mp4"
        shutil.copy(tiny_workspace.data / s["video"], copy)
        s["video"] = str(copy)
    (tmp_path / "two.json").write_text(json.dumps(samples))
    cfg, model, _, ds = _setup(tiny_workspace, filled, f"data.train={tmp_path / 'two.json'}",
                               "data.feature_cache_mode=require")
    assert open_features(cfg, model, ds.media_items(), "train") is not None  # same content: cached
    with open(ds.media_items()[0].paths[0], "ab") as fh:
        fh.write(b"\0")  # content changed (mtime and size too)
    with pytest.raises(CacheError, match="not cached"):
        open_features(cfg, model, ds.media_items(), "train")


def test_corrupt_shard_is_named(tiny_workspace, filled, tmp_path):
    import shutil

    copy = tmp_path / "features"
    shutil.copytree(filled, copy)
    cfg, model, _, ds = _setup(tiny_workspace, copy, "data.feature_cache_mode=require")
    shard = sorted(cache_dir_for(cfg, model).glob("shard-*.safetensors"))[0]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x55
    shard.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match=str(shard)):
        open_features(cfg, model, ds.media_items(), "train")


def test_eval_reads_the_cache_and_scores_the_same(trained_run, tmp_path):
    import json
    import shutil

    from skillgpt.checkpoint.delta import list_checkpoints
    from skillgpt.config import load_resolved, save_config
    from skillgpt.data.cached_features import fill_cache
    from skillgpt.eval.run import evaluate

    ckpt = tmp_path / "ckpt"
    shutil.copytree(list_checkpoints(trained_run.stage_2)[-1], ckpt)
    evaluate(ckpt, split="test", out_dir=tmp_path / "online", generate=False)
    cfg = load_resolved(ckpt / "config.yaml")
    cfg.data.feature_cache, cfg.data.feature_cache_mode = str(tmp_path / "features"), "require"
    save_config(cfg, ckpt / "config.yaml")
    with pytest.raises(CacheError, match="not cached"):  # require: an empty cache is refused
        evaluate(ckpt, split="test", out_dir=tmp_path / "cached", generate=False)
    model, tok = build_model(cfg)
    ds = SkillDataset(cfg.data.test, cfg.data, tok, cfg.model.llm.template, model.placeholder_tokens(),
                      cfg.model.llm.max_length)
    fill_cache(cfg, model, ds.media_items())
    evaluate(ckpt, split="test", out_dir=tmp_path / "cached", generate=False)
    a, b = (json.loads((tmp_path / d / "results.json").read_text())["records"] for d in ("online", "cached"))
    assert [r["pred"] for r in a] == [r["pred"] for r in b]
    for ra, rb in zip(a, b):
        assert ra["scores"] == pytest.approx(rb["scores"], abs=1e-4)
