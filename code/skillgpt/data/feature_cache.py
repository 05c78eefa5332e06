"""Feature cache: the frozen encoders' outputs, computed once per media file and stored on disk.

Layout of one cache (``<root>/<signature hash>/``)::

    signature.json            every setting that changes the features (encoder configs and weight
                              fingerprints, clip/frame sampling, resolution, crops, normalisation)
    index.json                {"shards": {name: {"sha256", "entries"}}, "entries": {key: shard name}}
    shard-00000.safetensors   tensors named "<key>/<branch>" (one per encoder branch)

A key is the SHA-256 of the media file's content (plus the view name for multi-view samples), so an
edited file gets a new key and a changed setting gets a new signature folder: stale features are never
read. Shards are written to a temporary name and renamed, and the index is rewritten after each shard,
so an interrupted run keeps every finished shard and resumes from there. A shard whose bytes do not
match the SHA-256 in the index is reported with its path.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from skillgpt.distributed import first_failure, work_share
from skillgpt.hashing import file_sha256 as sha256_file  # the name its callers use

FORMAT_VERSION = 1


class CacheError(ValueError):
    """The feature cache is corrupt or does not match; the message names the file."""


def signature_hash(signature: dict[str, Any]) -> str:
    """Stable hash of a JSON-able settings dict (sorted keys)."""
    text = json.dumps(signature, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


class ContentHasher:
    """SHA-256 of media files, memoised on disk by (absolute path, size, mtime) so re-runs are cheap."""

    def __init__(self, memo_file: Path) -> None:
        self.memo_file = memo_file
        self.memo: dict[str, str] = {}
        if memo_file.is_file():
            try:
                self.memo = json.loads(memo_file.read_text())
            except json.JSONDecodeError:
                self.memo = {}  # a damaged memo only costs re-hashing
        self._dirty = False

    def __call__(self, path: str | Path) -> str:
        path = Path(path).resolve()
        st = path.stat()
        memo_key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        digest = self.memo.get(memo_key)
        if digest is None:
            digest = self.memo[memo_key] = sha256_file(path)
            self._dirty = True
        return digest

    def save(self) -> None:
        if self._dirty:
            _atomic_write_text(self.memo_file, json.dumps(self.memo))
            self._dirty = False


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # several processes may write the same file
    tmp.write_text(text)
    os.replace(tmp, path)


class FeatureCache:
    """One cache folder for one feature signature. Read with ``get``; write with ``put`` + ``flush``."""

    def __init__(self, root: str | Path, signature: dict[str, Any], shard_size: int = 64) -> None:
        self.root = Path(root)
        self.signature = {"format": FORMAT_VERSION, **signature}
        self.dir = self.root / signature_hash(self.signature)
        self.shard_size = shard_size
        self.index_path = self.dir / "index.json"
        self.index: dict[str, Any] = {"shards": {}, "entries": {}}
        if self.index_path.is_file():
            try:
                self.index = json.loads(self.index_path.read_text())
                assert isinstance(self.index.get("shards"), dict) and isinstance(self.index.get("entries"), dict)
            except (json.JSONDecodeError, AssertionError) as err:
                raise CacheError(f"{self.index_path}: unreadable cache index ({err}); delete the folder") from err
            self._check_signature()
        self._pending: dict[str, dict[str, torch.Tensor]] = {}
        self._loaded: dict[str, dict[str, torch.Tensor]] = {}
        self.hasher = ContentHasher(self.root / "media_hashes.json")

    def _check_signature(self) -> None:
        sig_path = self.dir / "signature.json"
        if not sig_path.is_file():
            raise CacheError(f"{sig_path}: missing; the cache folder is incomplete, delete it")
        stored = json.loads(sig_path.read_text())
        if stored != json.loads(json.dumps(self.signature)):
            raise CacheError(f"{sig_path}: settings differ from this run's although the hash matches")

    # ---- keys -------------------------------------------------------------------------------
    def key(self, media: str | Path, view: str | None = None) -> str:
        """Cache key of a media file (content hash), per view for multi-view samples."""
        digest = self.hasher(media)
        return f"{digest}.{view}" if view else digest

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self.index["entries"] and k not in self._pending]

    def __contains__(self, key: str) -> bool:
        return key in self.index["entries"]

    def __len__(self) -> int:
        return len(self.index["entries"])

    # ---- reading ----------------------------------------------------------------------------
    def _load_shard(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._loaded:
            path = self.dir / name
            info = self.index["shards"].get(name)
            if info is None or not path.is_file():
                raise CacheError(f"{path}: shard listed in {self.index_path} is missing")
            if sha256_file(path) != info["sha256"]:
                raise CacheError(f"{path}: corrupt shard (SHA-256 differs from {self.index_path}); delete it and "
                                 "run `skillgpt cache-features` again")
            try:
                self._loaded[name] = load_file(str(path))
            except (SafetensorError, OSError) as err:
                raise CacheError(f"{path}: unreadable shard: {err}") from err
        return self._loaded[name]

    def get(self, key: str) -> dict[str, torch.Tensor]:
        """The tensors stored for `key`, by branch name."""
        shard = self._load_shard(self.index["entries"][key])
        prefix = key + "/"
        out = {name[len(prefix):]: t for name, t in shard.items() if name.startswith(prefix)}
        if not out:
            raise CacheError(f"{self.dir / self.index['entries'][key]}: has no tensors for key {key}")
        return out

    def verify(self) -> None:
        """Check the shards against their SHA-256, split across processes (shard i on rank i % world),
        then agree: a bad shard found by any rank raises CacheError naming it on every rank."""
        problem = None
        try:
            for name in work_share(list(self.index["shards"])):
                self._load_shard(name)
        except CacheError as err:
            problem = str(err)
        problem = first_failure(problem)
        if problem is not None:
            raise CacheError(problem)

    # ---- writing ----------------------------------------------------------------------------
    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Queue features for `key`; a shard is written every `shard_size` entries."""
        self._pending[key] = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        if len(self._pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        """Write queued entries as one new shard and update the index (atomic renames)."""
        self.hasher.save()
        if not self._pending:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        sig_path = self.dir / "signature.json"
        if not sig_path.is_file():
            _atomic_write_text(sig_path, json.dumps(self.signature, indent=1, sort_keys=True))
        name = f"shard-{len(self.index['shards']):05d}.safetensors"
        while (self.dir / name).exists():  # leftovers of an interrupted run are never overwritten in place
            name = f"shard-{len(self.index['shards']):05d}-{os.urandom(3).hex()}.safetensors"
        flat = {f"{key}/{branch}": t for key, parts in self._pending.items() for branch, t in parts.items()}
        tmp = self.dir / (name + ".tmp")
        save_file(flat, str(tmp))
        os.replace(tmp, self.dir / name)
        self.index["shards"][name] = {"sha256": sha256_file(self.dir / name), "entries": len(self._pending)}
        for key in self._pending:
            self.index["entries"][key] = name
        _atomic_write_text(self.index_path, json.dumps(self.index))
        self._pending = {}
