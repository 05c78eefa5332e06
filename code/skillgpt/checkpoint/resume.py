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
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from skillgpt.checkpoint.delta import CHECKPOINT_PREFIX, COMPLETE, list_checkpoints, save_trained_parts
from skillgpt.checkpoint.manifest import verify_manifest, write_manifest
from skillgpt.checkpoint.optimizer import gather_trainable, load_optimizer_state, save_optimizer_state
from skillgpt.config import Config, config_diff, load_resolved
from skillgpt.distributed import raise_if_any, run_on_rank0
from skillgpt.distributed import rank as process_rank
from skillgpt.models.skill_model import SkillGPT

# Settings that may differ on resume without changing what is trained.
RESUME_SAFE_KEYS = ("train.save_every", "train.keep_last", "train.resume", "train.allow_config_change",
                    "train.output_dir", "train.init_from", "train.deepspeed_config", "train.activation_checkpointing", "train.compile",
                    "train.report_to", "train.eval_every",
                    "data.num_workers", "data.prefetch_factor", "data.feature_cache", "data.cache_videos", "eval.",
                    "generation.", "run_name")  # generation.*: inference-time decoder settings


@dataclass
class TrainerState:
    """Where the run is: optimizer steps done, current epoch, optimizer steps of that epoch done, and
    the global batch (samples per optimizer step over all processes) and process count that did them."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    global_batch: int = 0
    world_size: int = 1


def _save_rng(folder: Path) -> None:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(folder / f"rng_rank{process_rank()}.safetensors"))
    np_state = np.random.get_state()
    py = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
          "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    (folder / f"rng_rank{process_rank()}.json").write_text(json.dumps(py))


def _load_rng(folder: Path, seed: int) -> None:
    """This rank's RNG streams; a rank the saving run did not have (more processes now) is seeded from
    (seed, rank) instead."""
    if not (folder / f"rng_rank{process_rank()}.safetensors").is_file():
        seed = seed * 7919 + process_rank()
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        return
    tensors = load_file(str(folder / f"rng_rank{process_rank()}.safetensors"))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    py = json.loads((folder / f"rng_rank{process_rank()}.json").read_text())
    random.setstate((py["python"][0], tuple(py["python"][1]), py["python"][2]))
    kind, keys, pos, has_gauss, gauss = py["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))


def _fresh_folder(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)


def _write_files(engine, model: SkillGPT, cfg: Config, tokenizer: PreTrainedTokenizerBase, state: TrainerState,
                 tmp: Path, metrics: dict[str, float] | None) -> None:
    """Every rank's part of a checkpoint: the collective gathers first, then this rank's files."""
    weights = gather_trainable(model)  # collective: whole tensors whatever the ZeRO stage
    save_optimizer_state(engine, model, weights, tmp, write=process_rank() == 0)
    _save_rng(tmp)
    if process_rank() == 0:
        save_trained_parts(model, cfg, tokenizer, tmp, weights)
        (tmp / "trainer_state.json").write_text(json.dumps(asdict(state), indent=2))
        if metrics:
            (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))


def _publish(tmp: Path, final: Path, run_dir: Path, cfg: Config) -> None:
    """Rank 0: manifest, COMPLETE marker, rename into place, prune to train.keep_last."""
    write_manifest(tmp)
    (tmp / COMPLETE).write_text("ok\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    if cfg.train.keep_last > 0:
        best = best_checkpoint(run_dir, cfg.train.keep_best) if cfg.train.keep_best else None
        for old in list_checkpoints(run_dir)[: -cfg.train.keep_last]:
            if old != best:
                shutil.rmtree(old)


def save_checkpoint(
    engine, model: SkillGPT, cfg: Config, tokenizer: PreTrainedTokenizerBase, state: TrainerState, run_dir: Path,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write a complete checkpoint (all ranks must call this) and prune to `train.keep_last`.

    Everything goes to a hidden temporary folder, then a manifest (sizes, checksums) and the COMPLETE
    marker, then one rename: a failed save (e.g. a full disk) leaves the previous checkpoint untouched.
    A failure on any rank (rank 0 writes most files) raises on every rank, after the ranks agree on it,
    instead of leaving the others waiting at a barrier."""
    final = run_dir / f"{CHECKPOINT_PREFIX}{state.global_step}"
    tmp = run_dir / f".tmp-{final.name}"
    run_on_rank0(f"preparing {tmp}", lambda: _fresh_folder(tmp))
    failure: Exception | None = None
    try:
        _write_files(engine, model, cfg, tokenizer, state, tmp, metrics)
    except OSError as err:
        kept = list_checkpoints(run_dir)
        failure = OSError(f"saving {final} failed: {err}; the previous checkpoint "
                          f"{kept[-1] if kept else '(none)'} is intact")
        failure.__cause__ = err
    except Exception as err:  # reported to every rank below
        failure = err
    try:
        raise_if_any(failure, f"saving {final}")
    except Exception:
        if process_rank() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    run_on_rank0(f"saving {final}", lambda: _publish(tmp, final, run_dir, cfg))
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


def truncate_log(run_dir: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (the killed run's tail)."""
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


def check_resume(previous: Path, cfg: Config, world: int, rank: int) -> None:
    """Refuse to resume with settings that change the run (unless train.allow_config_change)."""
    safe = RESUME_SAFE_KEYS + (("train.grad_accum",) if cfg.train.global_batch_size else ())
    changed = [k for k in config_diff(load_resolved(previous / "config.yaml"), cfg) if not k.startswith(safe)]
    saved = read_trainer_state(previous)
    batch = cfg.train.micro_batch_size * cfg.train.grad_accum * world
    if saved.global_batch and saved.global_batch != batch:
        changed.append(f"global batch ({saved.global_batch} samples per step on {saved.world_size} process(es), "
                       f"{batch} now on {world}; set train.global_batch_size to keep it)")
    if changed and not cfg.train.allow_config_change:
        raise ValueError(f"{previous}: resuming with settings that change the run: {', '.join(changed)}. "
                         "Restore them, start a new train.output_dir, or set train.allow_config_change=true")
    if changed and rank == 0:
        print(f"[skillgpt] resuming {previous} with changed settings: {', '.join(changed)}")
