"""Self-contained, movable checkpoints: the parent a run started from, and paths that work from anywhere.

Recorded when a run starts (`record_lineage`, before its config is saved; every checkpoint keeps it):
  train.init_from                one concrete parent checkpoint folder, absolute (a run folder given by the
                                 user is resolved to its newest complete checkpoint here, once)
  train.parent.manifest_sha256   SHA-256 of that checkpoint's MANIFEST.json (identifies its content)
  train.parent.parts             what it put into the model: projector | adapter | llm | generation, its
                                 own parts and those its own ancestors still contribute (`carried_parts`)
  PATH_KEYS, train.output_dir    absolute (a relative value is taken from the working directory)
A resumed run keeps the parent its first start recorded, even when a newer parent checkpoint appeared.

Used when a checkpoint is loaded (`checkpoint_config`: inference, eval, chat, demo). Each path, the
parent included, is the first existing of:
  1. an override (`--base-llm`, `--init-from`, `--set`/key=value), taken from the working directory
  2. the value as recorded (absolute; an older checkpoint's relative value: from the working directory)
  3. the same place relative to the run: the value seen from the run folder at training time
     (train.output_dir), applied to the checkpoint's run folder now (a run moved with its inputs)
  4. relative values only: the value under each folder above the checkpoint
The parent must have its recorded manifest hash; a run folder given for it means its checkpoint with that
hash (never its newest). It is skipped when the checkpoint replaces all it contributed (`PART_COVERS`).
A parent is loaded after the ancestors whose parts it still needs (`ancestry`): NExT-GPT's stage 3 starts from
stage 2 (signal tokens + output projectors), which starts from stage 1 (input projector, LLM).
"""
from __future__ import annotations

import copy
import os
import warnings
from functools import reduce
from pathlib import Path
from typing import Any, Sequence

from skillgpt.checkpoint.delta import COMPLETE, list_checkpoints, resolve_checkpoint
from skillgpt.checkpoint.manifest import MANIFEST, manifest_sha256, verify_manifest
from skillgpt.config import Config, load_resolved, parse_overrides

# Files the base model is built from: a checkpoint cannot be used without them.
MODEL_PATH_KEYS = ("model.llm.path", "model.encoder.checkpoint", "model.encoder.path", "model.encoder.qformer",
                   "model.context.encoder.checkpoint", "model.context.encoder.path",
                   "model.context.encoder.qformer", "data.video.processor")
PATH_KEYS = MODEL_PATH_KEYS + ("data.train", "data.val", "data.test", "data.media_root", "data.feature_cache",
                               "data.catalog", "train.deepspeed_config")
# A checkpoint's trained parts (file or folder in it) and the parent parts each one replaces when loaded on
# top: a projector is loaded strictly; a full LLM replaces every LLM weight, a merged parent adapter included.
PART_FILES = {"projector": "projector.safetensors", "adapter": "adapter", "llm": "llm",
              "generation": "generation.safetensors"}
PART_COVERS = {"projector": {"projector"}, "adapter": set(), "llm": {"llm", "adapter"}, "generation": {"generation"}}
FLAG_OF = {"model.llm.path": "--base-llm PATH", "train.init_from": "--init-from PATH"}


class ParentError(FileNotFoundError):
    """The recorded parent checkpoint is missing or changed."""


def _get(cfg: Config, key: str) -> Any:
    return reduce(getattr, key.split("."), cfg)


def _set(cfg: Config, key: str, value: Any) -> None:
    *path, last = key.split(".")
    setattr(reduce(getattr, path, cfg), last, value)


def own_parts(ckpt: Path) -> list[str]:
    """The trained parts stored in checkpoint `ckpt`."""
    return [part for part, name in PART_FILES.items() if (ckpt / name).exists()]


def needed_parent_parts(parent_parts: Sequence[str], ckpt: Path) -> list[str]:
    """The parent's parts that `ckpt`'s own parts do not replace (empty: the parent is not needed)."""
    covered = set().union(*(PART_COVERS[p] for p in own_parts(ckpt)))
    return [p for p in parent_parts if p not in covered]


def carried_parts(ckpt: Path) -> list[str]:
    """What loading `ckpt` with its ancestors puts into a model: its own parts, then the parts its recorded
    parent contributed that its own do not replace."""
    own = own_parts(ckpt)
    recorded = load_resolved(ckpt / "config.yaml").train.parent.parts
    return own + [p for p in needed_parent_parts(recorded, ckpt) if p not in own]


MAX_ANCESTRY = 16


def ancestry(ckpt: Path) -> list[Path]:
    """`ckpt` preceded by the ancestors whose parts it still needs, oldest first (each found as
    `checkpoint_config` finds a parent). Only recorded parents (with a manifest hash) are followed."""
    chain = [Path(ckpt)]
    while len(chain) <= MAX_ANCESTRY:
        cfg = load_resolved(chain[-1] / "config.yaml")
        if not cfg.train.init_from or not cfg.train.parent.manifest_sha256:
            return chain[::-1]
        _resolve_parent(cfg, chain[-1], set())
        if not cfg.train.init_from:
            return chain[::-1]
        chain.append(Path(cfg.train.init_from))
    raise ParentError(f"{ckpt}: more than {MAX_ANCESTRY} ancestors (train.init_from chain): a cycle?")


def candidates(value: str, origin: str | None, ckpt: Path | None) -> list[Path]:
    """Where a recorded path may be now, in the documented order (steps 2-4 of the module docstring)."""
    path = Path(value).expanduser()
    found = [path]
    if ckpt is not None and path.is_absolute() and origin and Path(origin).is_absolute():
        found.append(Path(os.path.normpath(ckpt.absolute().parent / os.path.relpath(path, origin))))
    elif ckpt is not None and not path.is_absolute():
        found += [folder / path for folder in ckpt.absolute().parents]
    return list(dict.fromkeys(found))


def _hint(key: str) -> str:
    flag = FLAG_OF.get(key)
    return (f"pass {flag} (or {key}=PATH)" if flag else
            f"pass {key}=PATH (skillgpt eval: as an override; infer, chat, demo: --set {key}=PATH)")


def _resolve_paths(cfg: Config, ckpt: Path, given: set[str]) -> None:
    """Point every path field at the first place it exists (a missing model file is an error)."""
    from skillgpt.pixel_rules import AUTO, BUILTIN_RULES

    for key in PATH_KEYS:
        value = _get(cfg, key)
        if not value or (key == "data.video.processor" and value in (AUTO, *BUILTIN_RULES)):
            continue  # a built-in pixel-rule name, not a folder
        tried = [Path(os.path.abspath(value))] if key in given else candidates(value, cfg.train.output_dir, ckpt)
        found = next((p for p in tried if p.exists()), None)
        if found is not None:
            _set(cfg, key, str(found))
        elif key in MODEL_PATH_KEYS:
            where = "given on the command line" if key in given else f"recorded in {ckpt / 'config.yaml'}"
            raise FileNotFoundError(f"{key}: {value} ({where}) not found (tried {', '.join(map(str, tried))}); "
                                    f"{_hint(key)} to say where it is now")


def _checkpoint_at(path: Path, sha: str | None) -> Path | None:
    """A checkpoint folder as is; a run folder: its checkpoint with manifest `sha` (newest when no hash is
    recorded, as older checkpoints did); None when there is none."""
    if (path / COMPLETE).is_file():
        return path
    if not path.is_dir():
        return None
    if sha is None:
        return resolve_checkpoint(path) if list_checkpoints(path) else None
    return next((c for c in reversed(list_checkpoints(path)) if _manifest_hash(c) == sha), None)


def _manifest_hash(ckpt: Path) -> str | None:
    return manifest_sha256(ckpt) if (ckpt / MANIFEST).is_file() else None


def find_parent(places: Sequence[Path], sha: str | None, child: str) -> Path:
    """The first of `places` holding the parent with manifest `sha` (any, for an unrecorded parent), its
    files present with their recorded sizes. `child` names who needs it in errors."""
    changed = []
    for place in places:
        found = _checkpoint_at(place, sha)
        if found is None:
            continue
        now = _manifest_hash(found) if sha is not None else None
        if now != sha:
            changed.append(f"{found} (manifest SHA-256 {(now or 'missing')[:12]}...)")
            continue
        problem = verify_manifest(found, checksums=False)
        if problem is not None:
            raise ParentError(f"{child}: its parent checkpoint {found} is damaged: {problem}")
        return found
    tried = ", ".join(map(str, places))
    if changed:
        raise ParentError(f"{child}: its parent checkpoint changed since it was recorded (SHA-256 of MANIFEST.json "
                          f"{sha[:12]}... recorded, found {'; '.join(changed)}); restore that checkpoint or "
                          f"{_hint('train.init_from')} with its copy")
    raise ParentError(f"{child}: its parent checkpoint (train.init_from) is not there: tried {tried}; "
                      f"{_hint('train.init_from')} with its new place (the checkpoint, or a run folder holding it)")


def parent_checkpoint(cfg: Config) -> Path:
    """The checkpoint `cfg.train.init_from` names, with its recorded manifest hash when there is one
    (build_model loads it; `checkpoint_config` and `record_lineage` already resolved it)."""
    return find_parent([Path(cfg.train.init_from)], cfg.train.parent.manifest_sha256, "train.init_from")


def _resolve_parent(cfg: Config, ckpt: Path, given: set[str]) -> None:
    """Point train.init_from at the parent checkpoint, or clear it when `ckpt` replaces all it contributed."""
    tc = cfg.train
    if not tc.init_from:
        return
    if tc.parent.manifest_sha256 and not needed_parent_parts(tc.parent.parts, ckpt):
        tc.init_from = None  # everything the parent put in, this checkpoint replaces
        return
    if tc.parent.manifest_sha256 is None:
        warnings.warn(f"{ckpt}: no recorded parent hash (trained before lineage was recorded); train.init_from "
                      f"{tc.init_from} is used as it is now", stacklevel=3)
    places = ([Path(os.path.abspath(tc.init_from))] if "train.init_from" in given
              else candidates(tc.init_from, tc.output_dir, ckpt))
    tc.init_from = str(find_parent(places, tc.parent.manifest_sha256, str(ckpt)))


def checkpoint_config(ckpt: str | Path, overrides: Sequence[str] = ()) -> Config:
    """The config of checkpoint folder `ckpt` (plus key=value `overrides`), its paths and parent resolved
    so that its model builds from any working directory (see the module docstring for the order)."""
    ckpt = Path(ckpt)
    cfg = load_resolved(ckpt / "config.yaml", overrides)
    given = {key for key, _ in parse_overrides(overrides)}
    _resolve_paths(cfg, ckpt, given)
    _resolve_parent(cfg, ckpt, given)
    return cfg


def _absolute(value: str | None) -> str | None:
    return os.path.abspath(Path(value).expanduser()) if value else value


def _resumed_parent(cfg: Config, run_dir: Path) -> Config | None:
    """The config of the newest checkpoint of `run_dir` when this start resumes it and it recorded a parent."""
    found = list_checkpoints(run_dir) if cfg.train.resume else []
    saved = load_resolved(found[-1] / "config.yaml") if found else None
    return saved if saved is not None and saved.train.parent.manifest_sha256 else None


def record_lineage(cfg: Config, run_dir: str | Path) -> Config:
    """`cfg` with its paths absolute and its parent recorded (train.init_from as one checkpoint folder,
    train.parent). Called once by `train` on every rank before the config is saved; idempotent. A resumed
    run keeps the parent it recorded first (`train.init_from` given now only says where to find it)."""
    cfg = copy.deepcopy(cfg)
    for key in PATH_KEYS + ("train.output_dir", "train.init_from"):
        _set(cfg, key, _absolute(_get(cfg, key)))
    tc = cfg.train
    if not tc.init_from:
        tc.parent.manifest_sha256, tc.parent.parts = None, []
        return cfg
    run_dir = Path(os.path.abspath(run_dir))
    resumed = _resumed_parent(cfg, run_dir)
    if resumed is not None:
        places = [Path(resumed.train.init_from), Path(tc.init_from)]
        tc.parent = copy.deepcopy(resumed.train.parent)
        tc.init_from = str(find_parent(list(dict.fromkeys(places)), tc.parent.manifest_sha256, str(run_dir)))
        return cfg
    if tc.parent.manifest_sha256:  # recorded already: check it
        tc.init_from = str(parent_checkpoint(cfg))
        return cfg
    parent = resolve_checkpoint(tc.init_from)  # the only time "newest" is resolved
    problem = verify_manifest(parent, checksums=False)
    if problem is not None:
        raise ParentError(f"train.init_from: {parent} cannot be a parent checkpoint: {problem}")
    tc.init_from = str(parent)
    tc.parent.manifest_sha256, tc.parent.parts = manifest_sha256(parent), carried_parts(parent)
    return cfg

