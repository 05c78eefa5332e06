"""Use and fill the feature cache for a model: signature, lookup by media item, `skillgpt cache-features`."""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from tqdm import tqdm

from skillgpt.config.schema import Config, VideoConfig
from skillgpt.data.feature_cache import CacheError, FeatureCache, sha256_file
from skillgpt.data.media import MediaItem, load_media
from skillgpt.pixel_rules import processor_rules
from skillgpt.data.video import PREPROCESSING

# Encoder settings that never change the features (where the weights are read from is covered by the
# weight files' content hashes instead).
_NOT_FEATURE_KEYS = ("checkpoint", "path")


def _encoder_signature(enc_cfg: Any, encoder: nn.Module, hashes: dict[str, str]) -> dict[str, Any]:
    settings = {k: v for k, v in dataclasses.asdict(enc_cfg).items() if k not in _NOT_FEATURE_KEYS}
    weights = []
    for f in encoder.weight_files():
        if f not in hashes:
            hashes[f] = sha256_file(f)
        weights.append(hashes[f])
    return {"settings": settings, "weights": weights, "dtype": str(encoder.dtype)}


def preprocessing_signature(video: VideoConfig) -> str | dict[str, Any]:
    """What the pixels of videos and images are made with: ``PREPROCESSING`` (ImageBind's reference) or
    the resolved Hugging Face processor rules of ``data.video.processor`` (its settings, not its path)."""
    rules = processor_rules(video.processor)
    return PREPROCESSING if rules is None else rules.signature()


def feature_signature(cfg: Config, model: nn.Module) -> dict[str, Any]:
    """Every setting that changes what the frozen encoders output for a media file."""
    hashes: dict[str, str] = {}
    m = cfg.model
    enc_cfgs = {"video": m.encoder, "context": m.context.encoder,
                "audio": dataclasses.replace(m.encoder, output=m.audio.output, keep_cls=m.audio.keep_cls,
                                             normalize_tokens=m.audio.normalize_tokens)}
    branches = {name: _encoder_signature(enc_cfgs[name], enc, hashes) for name, enc in model.encoder.items()}
    if "context" in branches:
        branches["context"]["frames"] = m.context.frames
    video = dataclasses.asdict(cfg.data.video) | {"preprocessing": preprocessing_signature(cfg.data.video)}
    return {"branches": branches, "video": video, "audio": dataclasses.asdict(cfg.data.audio)}


def item_key(cache: FeatureCache, path: Path, item: MediaItem) -> str:
    """Cache key of one file of `item`: content hash, kind, and the segment (seconds) when it has one, so
    a segment's features never collide with the whole video's."""
    segment = f"@{item.segment[0]!r}-{item.segment[1]!r}" if item.segment else ""
    return f"{cache.key(path)}.{item.kind}{segment}"


class CachedFeatures:
    """Cached encoder features of media items, shaped exactly like `SkillGPT.encode` output per item."""

    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def keys(self, item: MediaItem) -> list[str]:
        return [item_key(self.cache, p, item) for p in item.paths]

    def missing(self, items: Iterable[MediaItem]) -> list[MediaItem]:
        return [it for it in items if self.cache.missing(self.keys(it))]

    def lookup(self, item: MediaItem) -> dict[str, torch.Tensor]:
        """{branch: [N, D]}; fused views are concatenated view-major like online encoding."""
        parts = [self.cache.get(k) for k in self.keys(item)]
        if not item.fused:
            return parts[0]
        return {b: torch.cat([p[b] for p in parts], dim=0) for b in parts[0]}


def open_features(cfg: Config, model: nn.Module, items: list[MediaItem], where: str) -> CachedFeatures | None:
    """The cache for `items` when `data.feature_cache` is set and holds all of them; else None (mode
    auto, with a warning saying why) or CacheError (mode require)."""
    if not cfg.data.feature_cache:
        return None
    if cfg.data.augment.enabled:
        problem = "data.augment is enabled: augmented clips have no cached features"
        if cfg.data.feature_cache_mode == "require":
            raise CacheError(f"data.feature_cache_mode=require: {problem}")
        warnings.warn(f"feature cache not used, encoding online: {problem}", stacklevel=2)
        return None
    cache = FeatureCache(cfg.data.feature_cache, feature_signature(cfg, model))
    features = CachedFeatures(cache)
    try:
        absent = features.missing(items)
        cache.hasher.save()
        problem = None
        if absent:
            problem = (f"{len(absent)} of {len(items)} media items of {where} are not cached in {cache.dir} "
                       f"(first: {absent[0].paths[0]}); run `skillgpt cache-features` with this config")
        else:
            cache.verify()
    except CacheError as err:
        problem = str(err)
    if problem is None:
        return features
    if cfg.data.feature_cache_mode == "require":
        raise CacheError(f"data.feature_cache_mode=require: {problem}")
    warnings.warn(f"feature cache not used, encoding online: {problem}", stacklevel=2)
    return None


@torch.no_grad()
def fill_cache(cfg: Config, model: nn.Module, items: list[MediaItem], batch_size: int = 8,
               device: str | torch.device = "cpu") -> FeatureCache:
    """Encode every media file of `items` not yet cached (resumable: finished shards are kept)."""
    cache = FeatureCache(cfg.data.feature_cache, feature_signature(cfg, model))
    single: dict[str, MediaItem] = {}  # one entry per file and kind; fused views are cached per view
    for it in items:
        for p in it.paths:
            single.setdefault(f"{p}|{it.kind}|{it.segment}", MediaItem(it.kind, (p,), segment=it.segment))
    todo = [it for it in single.values() if cache.missing([item_key(cache, it.paths[0], it)])]
    model.encoder.to(device)
    bar = tqdm(total=len(single), initial=len(single) - len(todo), desc="cache features", unit="file")
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        for kind in {it.kind for it in chunk}:
            group = [it for it in chunk if it.kind == kind]
            pixels = torch.stack([load_media(it, cfg.data) for it in group]).to(device)
            feats = model.encode(kind, pixels)
            for row, it in enumerate(group):
                cache.put(item_key(cache, it.paths[0], it), {b: f[row] for b, f in feats.items()})
        bar.update(len(chunk))
    cache.flush()
    bar.close()
    return cache


def cache_dir_for(cfg: Config, model: nn.Module) -> Path:
    """Folder that this config's features live in (for messages and tests)."""
    return FeatureCache(cfg.data.feature_cache, feature_signature(cfg, model)).dir
