"""Where an evaluation's results go and what produced them.

Every (data file, settings) pair gets its own folder next to the checkpoint,
``<checkpoint>/eval/<split>-<data file stem>-<8 hex of the settings>``, so evaluating another test file
or other settings never overwrites earlier results (the same data and settings reuse their folder).
``results.json`` carries a ``run`` block: data path, checkpoint, split, settings, versions and time.
"""
from __future__ import annotations

import hashlib
import json
import platform
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

VERSIONED = ("skillgpt", "torch", "transformers", "peft", "sacrebleu")


def settings_key(data_path: str | Path, settings: Mapping[str, Any]) -> str:
    """8 hex digits identifying the resolved data file and the settings (order-independent)."""
    blob = json.dumps({"data": str(Path(data_path).resolve()), **settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def default_out_dir(ckpt: Path, split: str, data_path: str | Path, settings: Mapping[str, Any]) -> Path:
    """``<ckpt>/eval/<split>-<data stem>-<settings key>``."""
    return Path(ckpt) / "eval" / f"{split}-{Path(data_path).stem}-{settings_key(data_path, settings)}"


def versions() -> dict[str, str | None]:
    """Python and the installed versions of the packages that shape the results (None: not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_info(ckpt: Path, split: str, data_path: str | Path, settings: Mapping[str, Any],
             started: float, eval_config: Any = None) -> dict[str, Any]:
    """The ``run`` block of results.json (absolute paths, UTC ISO times, wall seconds)."""
    iso = lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")  # noqa: E731
    now = time.time()
    return {"data": str(Path(data_path).resolve()), "split": split, "checkpoint": str(Path(ckpt).resolve()),
            "settings": dict(settings), "eval_config": eval_config, "versions": versions(),
            "started_utc": iso(started), "finished_utc": iso(now), "seconds": round(now - started, 1)}
