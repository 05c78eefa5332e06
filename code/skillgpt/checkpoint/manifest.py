"""Checkpoint manifests: every file's size and SHA-256, written last, checked before a checkpoint is used."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from skillgpt.hashing import file_sha256

MANIFEST = "MANIFEST.json"


def write_manifest(folder: Path) -> None:
    """Record every file below `folder` (relative path -> size, sha256)."""
    files = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def manifest_sha256(folder: Path) -> str:
    """SHA-256 of `folder`'s manifest: one hash that identifies the checkpoint's content (lineage records it)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing (not a complete SkillGPT checkpoint)")
    return file_sha256(path)


def verify_manifest(folder: Path, checksums: bool = True) -> Optional[str]:
    """None when every listed file is present with its size and (with `checksums`) its SHA-256; else what
    is wrong."""
    path = folder / MANIFEST
    if not path.is_file():
        return f"{path} is missing"
    try:
        files = json.loads(path.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        return f"{path} is unreadable ({err})"
    for rel, info in files.items():
        f = folder / rel
        if not f.is_file():
            return f"{f} is missing"
        if f.stat().st_size != info["size"]:
            return f"{f} has {f.stat().st_size} bytes, the manifest says {info['size']}"
        if checksums and file_sha256(f) != info["sha256"]:
            return f"{f} is corrupt (SHA-256 differs from {path})"
    return None
