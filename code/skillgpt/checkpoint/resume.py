"""Resume state: step counters, RNG streams and the optimizer/scheduler state (safetensors + JSON, no
pickle, independent of the number of processes: see skillgpt.checkpoint.optimizer).

A checkpoint is written to `.tmp-checkpoint-N/`, marked COMPLETE and renamed into place, so a run killed
mid-save leaves the previous checkpoint as the newest complete one.
"""
from __future__ import annotations

import json
import random
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from skillgpt.checkpoint.delta import CHECKPOINT_PREFIX, COMPLETE, list_checkpoints, save_trained_parts
from skillgpt.checkpoint.manifest import verify_manifest, write_manifest
from skillgpt.checkpoint.optimizer import gather_trainable, load_optimizer_state, save_optimizer_state
from skillgpt.config import Config
from skillgpt.models.skill_model import SkillGPT


@dataclass
class TrainerState:
    """Where the run is: optimizer steps done, current epoch, optimizer steps of that epoch done, and
    the global batch (samples per optimizer step over all processes) and process count that did them."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_batch: int = 0
    world_size: int = 1


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _save_rng(folder: Path) -> None:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(folder / f"rng_rank{_rank()}.safetensors"))
    np_state = np.random.get_state()
    py = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
          "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    (folder / f"rng_rank{_rank()}.json").write_text(json.dumps(py))


def _load_rng(folder: Path, seed: int) -> None:
    """This rank's RNG streams; a rank the saving run did not have (more processes now) is seeded from
    (seed, rank) instead."""
    if not (folder / f"rng_rank{_rank()}.safetensors").is_file():
        seed = seed * 7919 + _rank()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        return
    tensors = load_file(str(folder / f"rng_rank{_rank()}.safetensors"))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    py = json.loads((folder / f"rng_rank{_rank()}.json").read_text())
    random.setstate((py["python"][0], tuple(py["python"][1]), py["python"][2]))
    kind, keys, pos, has_gauss, gauss = py["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))


def save_checkpoint(
    engine, model: SkillGPT, cfg: Config, tokenizer: PreTrainedTokenizerBase, state: TrainerState, run_dir: Path,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write a complete checkpoint (all ranks must call this) and prune to `train.keep_last`.

    Everything goes to a hidden temporary folder, then a manifest (sizes, checksums) and the COMPLETE
    marker, then one rename: a failed save (e.g. a full disk) leaves the previous checkpoint untouched."""
    final = run_dir / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = run_dir / f".tmp-{final.name}"
    if _rank() == 0 and tmp.exists():
        shutil.rmtree(tmp)
    _barrier()
    try:
        if _rank() == 0:
            tmp.mkdir(parents=True)
        _barrier()
        weights = gather_trainable(model)  # collective: whole tensors whatever the ZeRO stage
        save_optimizer_state(engine, model, weights, tmp, write=_rank() == 0)
        _save_rng(tmp)
        _barrier()
        if _rank() == 0:
            save_trained_parts(model, cfg, tokenizer, tmp, weights)
            (tmp / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))
            if metrics:
                (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
            write_manifest(tmp)
            (tmp / COMPLETE).write_text("ok\n")
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = list_checkpoints(run_dir)
        raise OSError(f"saving {final} failed: {err}; the previous checkpoint "
                      f"{kept[-1] if kept else '(none)'} is intact") from err
    if _rank() == 0:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        if cfg.train.keep_last > 0:
            best = best_checkpoint(run_dir, cfg.train.keep_best) if cfg.train.keep_best else None
            for old in list_checkpoints(run_dir)[: -cfg.train.keep_last]:
                if old != best:
                    shutil.rmtree(old)
    _barrier()
    return final


def best_checkpoint(run_dir: Path, metric: str) -> Path | None:
    """The complete checkpoint with the lowest `metric` in its metrics.json (None if none has it)."""
    scored = []
    for ckpt in list_checkpoints(run_dir):
        path = ckpt / "metrics.json"
        if path.is_file() and metric in (values := json.loads(path.read_text())):
            scored.append((values[metric], ckpt))
    return min(scored, key=lambda t: t[0])[1] if scored else None


def latest_valid_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint whose files match its manifest; corrupt ones are skipped with a
    warning (falling back to the one before)."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        problem = verify_manifest(ckpt)
        if problem is None:
            return ckpt
        warnings.warn(f"skipping checkpoint {ckpt}: {problem}; falling back to the previous one", stacklevel=2)
    return None


def read_trainer_state(ckpt: Path) -> TrainerState:
    try:
        return TrainerState(**json.loads((ckpt / "trainer_state.json").read_text()))
    except TypeError as err:
        raise ValueError(f"{ckpt / 'trainer_state.json'}: not a trainer state of this SkillGPT version ({err})") from err


def load_resume_state(engine, model: SkillGPT, ckpt: Path, seed: int) -> TrainerState:
    """Restore optimizer/scheduler state, RNG streams and counters from `ckpt` (weights of the trained
    parts are loaded into the model before the engine is built)."""
    load_optimizer_state(engine, model, ckpt)
    _load_rng(ckpt, seed)
    return read_trainer_state(ckpt)
