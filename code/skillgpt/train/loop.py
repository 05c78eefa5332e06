"""One training stage with DeepSpeed, readable top to bottom: build, resume, loop, checkpoint."""
from __future__ import annotations

import json
import math
import os
import random
import signal
import socket
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from skillgpt.checkpoint.delta import list_checkpoints, load_trained_parts
from skillgpt.checkpoint.resume import (TrainerState, latest_valid_checkpoint, load_resume_state, read_trainer_state,
                                       save_checkpoint)
from skillgpt.config import Config, config_diff, load_resolved, save_config
from skillgpt.data.cached_features import open_features
from skillgpt.data.dataset import SkillDataset, collate
from skillgpt.data.media import media_to
from skillgpt.data.mixture import MixtureDataset, build_train_dataset
from skillgpt.models.build import build_model
from skillgpt.models.compile import compile_blocks
from skillgpt.models.skill_model import IGNORE_INDEX
from skillgpt.train.ds_config import derive_grad_accum, make_deepspeed_config, make_optimizer
from skillgpt.train.order import epoch_order, rank_share
from skillgpt.train.schedule import warmup_cosine


def init_distributed() -> tuple[int, int]:
    """Join the launcher's process group, or create a one-process group for a plain `python -m
    skillgpt.cli train`; returns (rank, world size). DeepSpeed's engine reads LOCAL_RANK and friends from
    os.environ, so the one-process case sets them (on a free local port)."""
    import deepspeed

    if not dist.is_initialized():
        if "RANK" not in os.environ:  # launched without a launcher: a one-process group
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _event(run_dir: Path, rank: int, record: dict) -> None:
    """Unusual events (skipped non-finite losses) go to events.jsonl and stderr."""
    if rank == 0:
        print(f"[skillgpt] warning: {record}", file=sys.stderr)
        with open(run_dir / "events.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def _truncate_log(run_dir: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (the killed run's tail)."""
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


# Settings that may differ on resume without changing what is trained.
RESUME_SAFE_KEYS = ("train.save_every", "train.keep_last", "train.resume", "train.allow_config_change",
                    "train.output_dir", "train.deepspeed_config", "train.activation_checkpointing", "train.compile",
                    "data.num_workers", "data.prefetch_factor", "data.feature_cache", "data.cache_videos", "eval.",
                    "run_name")


class StopRequest:
    """SIGTERM / SIGINT set a flag; the loop saves a checkpoint after the current step and exits."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame) -> None:
        self.signal = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@torch.no_grad()
def validation_loss(engine, loader: DataLoader, device: torch.device) -> float:
    """Mean loss over the validation loader (eval mode; the training mode is restored)."""
    engine.eval()
    total, count = 0.0, 0
    for batch in loader:
        loss = engine(batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["labels"].to(device),
                      media_to(batch["media"], device))
        total, count = total + loss.item() * len(batch["ids"]), count + len(batch["ids"])
    engine.train()
    return total / max(count, 1)


def out_of_memory_advice(cfg: Config, batch: dict) -> str:
    """What to lower when a step runs out of accelerator memory."""
    return (f"out of memory in a training step (batch {batch['ids']}, {batch['input_ids'].shape[1]} tokens). "
            f"Lower train.micro_batch_size ({cfg.train.micro_batch_size}; raise train.grad_accum to keep the "
            f"effective batch), model.llm.max_length ({cfg.model.llm.max_length}), data.video.num_clips "
            f"({cfg.data.video.num_clips}) or the visual tokens per clip (model.encoder.pool, a pool/resampler "
            "projector), or use a ZeRO-3 / offload DeepSpeed config (train.deepspeed_config)")


def _agreed(flag: bool, world: int) -> bool:
    """True on every rank when any rank saw the flag (so all ranks stop at the same step)."""
    if world == 1:
        return flag
    t = torch.tensor(float(flag))
    dist.all_reduce(t)
    return bool(t.item() > 0)


def _check_resume(previous: Path, cfg: Config, world: int, rank: int) -> None:
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


def supervised_tokens(labels: torch.Tensor) -> int:
    """Tokens the loss is taken over (the next token is supervised)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def micro_batch_seed(seed: int, step: int, micro_batch: int) -> int:
    """Seed of the random draws (dropout) of one micro-batch: a function of its place in the run only."""
    return ((seed * 1_000_003 + step) * 65_537 + micro_batch) % 2**63


def train_step(engine, micro_batches: list[dict], device: torch.device, world: int, rank: int, step: int,
               cfg: Config) -> tuple[float, str | None]:
    """Forward/backward every micro-batch of one optimizer step, then step. The loss is the sum over the
    global batch's supervised tokens divided by their count (all processes), so the split into
    micro-batches and processes does not change it; dropout is seeded by the micro-batch's global index
    (`order.rank_share`: local j is global j * world + rank), so neither are the dropout masks. Returns
    (loss, None) or (loss, why the step was skipped): a non-finite loss or gradient makes ZeRO discard the
    step (checked, not assumed)."""
    count = torch.tensor(float(sum(supervised_tokens(b["labels"]) for b in micro_batches)))
    if world > 1:
        dist.all_reduce(count)
    num_tokens = max(count.item(), 1.0)
    total = torch.zeros((), device=device)
    skipped_before = engine.skipped_steps
    for j, batch in enumerate(micro_batches):
        torch.manual_seed(micro_batch_seed(cfg.train.seed, step, j * world + rank))
        try:
            loss = engine(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                          batch["labels"].to(device), media_to(batch["media"], device), num_tokens=num_tokens)
        except torch.OutOfMemoryError as err:
            raise MemoryError(out_of_memory_advice(cfg, batch)) from err
        # a non-finite loss is multiplied by NaN so that every gradient becomes NaN and ZeRO's overflow check
        # discards the step (no host sync here: the check happens once, after the step)
        loss = loss * torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))
        # DeepSpeed divides by the accumulation steps and averages over processes; both are in num_tokens.
        engine.backward(loss * len(micro_batches) * world)
        engine.step()
        total += loss.detach().float()
    if world > 1:
        dist.all_reduce(total)
    value, skipped = total.item(), engine.skipped_steps > skipped_before
    if not math.isfinite(value) and not skipped:
        raise RuntimeError("a non-finite loss reached an optimizer step that was not discarded; "
                           "use a ZeRO stage (1-3) in train.deepspeed_config")
    if skipped:
        return value, "nonfinite_grad" if math.isfinite(value) else "nonfinite_loss"
    return value, None


def train(cfg: Config) -> Path:
    """Run (or resume) the stage described by `cfg`; returns the newest checkpoint folder."""
    import deepspeed

    rank, world = init_distributed()
    tc = cfg.train
    tc.grad_accum = derive_grad_accum(tc, world)
    seed_everything(tc.seed)
    run_dir = Path(tc.output_dir)
    previous = latest_valid_checkpoint(run_dir) if tc.resume else None
    if previous is not None:
        _check_resume(previous, cfg, world, rank)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")

    model, tokenizer = build_model(cfg)
    dataset = build_train_dataset(cfg, tokenizer, model.placeholder_tokens())
    if dataset.skipped and rank == 0:
        with open(run_dir / "skipped_samples.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(s) + "\n" for s in dataset.skipped)
        print(f"[skillgpt] data.on_bad_sample=skip: {len(dataset.skipped)} sample(s) skipped, listed in "
              f"{run_dir / 'skipped_samples.jsonl'}", file=sys.stderr)
    dataset.features = open_features(cfg, model, dataset.media_items(), f"data.train ({cfg.data.train or 'mixture'})")
    dataset.augment = cfg.data.augment if cfg.data.augment.enabled else None
    global_batch = tc.micro_batch_size * tc.grad_accum * world
    epoch_size = dataset.epoch_size() if isinstance(dataset, MixtureDataset) else len(dataset)
    steps_per_epoch = epoch_size // global_batch
    if steps_per_epoch == 0:
        raise ValueError(
            f"data.train: {epoch_size} samples per epoch is less than one optimizer step "
            f"(micro_batch_size {tc.micro_batch_size} x grad_accum {tc.grad_accum} x {world} processes)"
        )
    total_steps = tc.max_steps if tc.max_steps > 0 else tc.epochs * steps_per_epoch
    if previous is not None:
        load_trained_parts(model, previous, cfg)

    if tc.activation_checkpointing:  # non-reentrant: works with frozen embeddings and LoRA as is
        model.causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if tc.compile:
        compiled = compile_blocks(model, tc.compile_backend)
        if rank == 0:
            print(f"[skillgpt] train.compile: {len(compiled)} blocks compiled with {tc.compile_backend} "
                  "(the first steps include compile time)")
    trainable = [p for p in model.parameters() if p.requires_grad]
    ds_config = make_deepspeed_config(cfg, world)
    optimizer = make_optimizer(trainable, tc, ds_config)
    warmup = math.ceil(tc.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, warmup=warmup, total=total_steps, min_ratio=tc.min_lr_ratio))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    engine.train()  # from_pretrained leaves the LLM in eval mode (no LoRA dropout); frozen encoders stay in eval
    state = TrainerState(global_batch=global_batch, world_size=world)
    if previous is not None:
        state = load_resume_state(engine, model, previous, tc.seed)
        state.global_batch, state.world_size = global_batch, world
        if rank == 0:
            _truncate_log(run_dir, state.global_step)
            print(f"[skillgpt] resumed from {previous} at step {state.global_step}/{total_steps}")

    device = engine.device
    val_loader = None
    if tc.keep_best:
        if tc.keep_best != "val_loss" or not cfg.data.val:
            raise ValueError(f"train.keep_best: only 'val_loss' is supported and it needs data.val (got {tc.keep_best!r})")
        val_set = SkillDataset(cfg.data.val, cfg.data, tokenizer, cfg.model.llm.template, model.placeholder_tokens(),
                               cfg.model.llm.max_length)
        val_loader = DataLoader(val_set, batch_size=tc.micro_batch_size, collate_fn=partial(collate, pad_id=tokenizer.pad_token_id))

    def save(state: TrainerState) -> None:
        metrics = {"val_loss": validation_loss(engine, val_loader, device)} if val_loader is not None else None
        if metrics and rank == 0:
            print(f"[skillgpt] step {state.global_step}: val_loss {metrics['val_loss']:.4f}")
        save_checkpoint(engine, model, cfg, tokenizer, state, run_dir, metrics)

    bar = tqdm(total=total_steps, initial=state.global_step, desc=f"stage {cfg.stage}", disable=rank != 0)
    saved_at = state.global_step if previous is not None else -1
    stopping, bad_in_a_row = False, 0
    with StopRequest() as stop:  # SIGTERM/SIGINT: finish the step, save, exit
        while state.global_step < total_steps and not stopping:
            dataset.set_epoch(state.epoch, tc.seed)
            order = epoch_order(dataset, tc.seed, state.epoch, tc.micro_batch_size, cfg.data.group_by_length)
            mine = rank_share(order[: steps_per_epoch * global_batch], tc.micro_batch_size, tc.grad_accum, world, rank)
            loader = DataLoader(
                dataset, batch_size=tc.micro_batch_size, sampler=mine[state.step_in_epoch * tc.grad_accum * tc.micro_batch_size :],
                num_workers=cfg.data.num_workers, collate_fn=partial(collate, pad_id=tokenizer.pad_token_id),
                prefetch_factor=cfg.data.prefetch_factor if cfg.data.num_workers > 0 else None,
                pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(tc.seed + state.epoch),
            )
            batches = iter(loader)
            while state.step_in_epoch < steps_per_epoch and state.global_step < total_steps:
                tic = time.time()
                micro_batches = [next(batches) for _ in range(tc.grad_accum)]
                lr = scheduler.get_last_lr()[0]  # the rate this step uses
                loss, skipped = train_step(engine, micro_batches, device, world, rank, state.global_step, cfg)
                state.global_step, state.step_in_epoch = state.global_step + 1, state.step_in_epoch + 1
                record = {"step": state.global_step, "epoch": state.epoch, "loss": loss,
                          "lr": lr, "seconds": round(time.time() - tic, 3)}
                if skipped:  # the batch is used up, the weights, optimizer state and LR schedule stay
                    bad_in_a_row += 1
                    record["skipped"] = skipped
                    _event(run_dir, rank, {"step": state.global_step, "epoch": state.epoch, "event": skipped,
                                           "batch": [i for b in micro_batches for i in b["ids"]], "in_a_row": bad_in_a_row})
                else:
                    bad_in_a_row = 0
                if rank == 0:
                    _log(run_dir, record)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.2e}")
                    bar.update(1)
                if bad_in_a_row >= tc.max_nonfinite:
                    save(state)
                    raise FloatingPointError(
                        f"{bad_in_a_row} non-finite steps in a row at step {state.global_step} (train.max_nonfinite="
                        f"{tc.max_nonfinite}); checkpoint saved in {run_dir}. Lower train.lr or check the data "
                        f"(see {run_dir / 'events.jsonl'})")
                if tc.save_every > 0 and state.global_step % tc.save_every == 0:
                    save(state)
                    saved_at = state.global_step
                stopping = _agreed(stop.signal is not None, world)
                if stopping:
                    break
            if state.step_in_epoch >= steps_per_epoch:
                state.epoch, state.step_in_epoch = state.epoch + 1, 0
                if tc.save_every == 0 and state.global_step != saved_at:
                    save(state)
                    saved_at = state.global_step
    bar.close()
    if saved_at != state.global_step:
        save(state)
    if stopping and rank == 0:
        name = signal.Signals(stop.signal).name if stop.signal is not None else "a signal on another rank"
        print(f"[skillgpt] stopped by {name} at step {state.global_step}/{total_steps}; checkpoint saved. "
              "Run the same command again to resume.")
    return list_checkpoints(run_dir)[-1]
