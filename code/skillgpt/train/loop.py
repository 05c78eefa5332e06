"""One training stage with DeepSpeed: `train` = `setup` (process group, run folder, model, data, engine,
resume state), then `run_steps` (epochs of `one_step`, `save` on schedule). Bookkeeping collectives go
through skillgpt.distributed, so they work on NCCL (CUDA tensors only) as on gloo. Validation lives in
train.validation, TensorBoard / W&B / loss.png in train.reporting (rank 0 only)."""
from __future__ import annotations

import json
import math
import random
import signal
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from skillgpt.checkpoint.delta import list_checkpoints, load_trained_parts
from skillgpt.checkpoint.lineage import record_lineage
from skillgpt.checkpoint.resume import (TrainerState, check_resume, latest_valid_checkpoint, load_resume_state,
                                       save_checkpoint, truncate_log)
from skillgpt.config import Config, save_config
from skillgpt.data.cached_features import open_features
from skillgpt.data.dataset import collate
from skillgpt.data.media import media_to
from skillgpt.data.mixture import MixtureDataset, build_train_dataset
from skillgpt.distributed import agree, all_reduce_sum, init_distributed, raise_if_any, run_on_rank0
from skillgpt.models.build import build_model
from skillgpt.models.compile import compile_blocks
from skillgpt.models.skill_model import IGNORE_INDEX, SkillGPT
from skillgpt.train.ds_config import derive_grad_accum, make_deepspeed_config, make_optimizer
from skillgpt.train.order import epoch_order, rank_share
from skillgpt.train.reporting import Reporter, SilentReporter, make_reporter
from skillgpt.train.schedule import warmup_cosine
from skillgpt.train.validation import Validator, check_validation_config, eval_due


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


def out_of_memory_advice(cfg: Config, batch: dict) -> str:
    """What to lower when a step runs out of accelerator memory."""
    return (f"out of memory in a training step (batch {batch['ids']}, {batch['input_ids'].shape[1]} tokens). "
            f"Lower train.micro_batch_size ({cfg.train.micro_batch_size}; raise train.grad_accum to keep the "
            f"effective batch), model.llm.max_length ({cfg.model.llm.max_length}), data.video.num_clips "
            f"({cfg.data.video.num_clips}) or the visual tokens per clip (model.encoder.pool, a pool/resampler "
            "projector), or use a ZeRO-3 / offload DeepSpeed config (train.deepspeed_config)")


def supervised_tokens(labels: torch.Tensor) -> int:
    """Tokens the loss is taken over (the next token is supervised)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def micro_batch_seed(seed: int, step: int, micro_batch: int) -> int:
    """Seed of the random draws (dropout) of one micro-batch: a function of its place in the run only."""
    return ((seed * 1_000_003 + step) * 65_537 + micro_batch) % 2**63



def global_token_count(micro_batches: list[dict]) -> float:
    """Supervised tokens of one optimizer step over all processes (at least 1)."""
    local = torch.tensor(float(sum(supervised_tokens(b["labels"]) for b in micro_batches)))
    return max(all_reduce_sum(local).item(), 1.0)


def stop_agreed(signalled: bool) -> bool:
    """True on every rank when any rank was signalled (so all ranks stop at the same step)."""
    return agree(signalled)


def train_step(engine, micro_batches: list[dict], device: torch.device, world: int, rank: int, step: int,
               cfg: Config) -> tuple[float, str | None]:
    """Forward/backward every micro-batch of one optimizer step, then step. The loss is the sum over the
    global batch's supervised tokens divided by their count (all processes), so the split into
    micro-batches and processes does not change it; dropout is seeded by the micro-batch's global index
    (`order.rank_share`: local j is global j * world + rank), so neither are the dropout masks. Returns
    (loss, None) or (loss, why the step was skipped): a non-finite loss or gradient makes ZeRO discard the
    step (checked, not assumed)."""
    num_tokens = global_token_count(micro_batches)
    total = torch.zeros((), device=device)
    skipped_before = engine.skipped_steps
    for j, batch in enumerate(micro_batches):
        torch.manual_seed(micro_batch_seed(cfg.train.seed, step, j * world + rank))
        try:
            loss = engine(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                          batch["labels"].to(device), media_to(batch["media"], device), num_tokens=num_tokens,
                          caption_embeds=batch.get("caption_embeds"))
        except torch.OutOfMemoryError as err:
            raise MemoryError(out_of_memory_advice(cfg, batch)) from err
        # a non-finite loss is multiplied by NaN so that every gradient becomes NaN and ZeRO's overflow check
        # discards the step (no host sync here: the check happens once, after the step)
        loss = loss * torch.where(torch.isfinite(loss.detach()), 1.0, float("nan"))
        # DeepSpeed divides by the accumulation steps and averages over processes; both are in num_tokens.
        engine.backward(loss * len(micro_batches) * world)
        engine.step()
        total += loss.detach().float()
    value, skipped = all_reduce_sum(total).item(), engine.skipped_steps > skipped_before
    if not math.isfinite(value) and not skipped:
        raise RuntimeError("a non-finite loss reached an optimizer step that was not discarded; "
                           "use a ZeRO stage (1-3) in train.deepspeed_config")
    if skipped:
        return value, "nonfinite_grad" if math.isfinite(value) else "nonfinite_loss"
    return value, None


# ---- setup ------------------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything one training stage works with, built by `setup`."""

    cfg: Config
    rank: int
    world: int
    run_dir: Path
    previous: Path | None  # the checkpoint resumed from
    model: SkillGPT
    tokenizer: Any
    dataset: Dataset
    engine: Any
    scheduler: torch.optim.lr_scheduler.LRScheduler
    state: TrainerState
    steps_per_epoch: int
    total_steps: int
    validator: Validator | None  # data.val with train.eval_every or train.keep_best
    reporter: Reporter  # rank 0: train.report_to and loss.png; other ranks: silent
    validated: tuple[int, dict] | None = None  # (step, metrics) of the latest validation

    @property
    def global_batch(self) -> int:
        tc = self.cfg.train
        return tc.micro_batch_size * tc.grad_accum * self.world


def prepare_run_dir(cfg: Config, rank: int, world: int) -> tuple[Path, Path | None]:
    """The run folder (config saved by rank 0) and the checkpoint to resume from, if any."""
    run_dir = Path(cfg.train.output_dir)
    previous = latest_valid_checkpoint(run_dir) if cfg.train.resume else None
    if previous is not None:
        check_resume(previous, cfg, world, rank)
    run_on_rank0(f"writing {run_dir / 'config.yaml'}", lambda: _save_run_config(cfg, run_dir))
    return run_dir, previous


def _save_run_config(cfg: Config, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")


def build_dataset(cfg: Config, model: SkillGPT, tokenizer, run_dir: Path, rank: int) -> Dataset:
    """The training set (bad samples listed when skipped), with cached features and augmentation."""
    dataset = build_train_dataset(cfg, tokenizer, model.placeholder_tokens())
    if dataset.skipped and rank == 0:
        with open(run_dir / "skipped_samples.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(s) + "\n" for s in dataset.skipped)
        print(f"[skillgpt] data.on_bad_sample=skip: {len(dataset.skipped)} sample(s) skipped, listed in "
              f"{run_dir / 'skipped_samples.jsonl'}", file=sys.stderr)
    dataset.features = open_features(cfg, model, dataset.media_items(), f"data.train ({cfg.data.train or 'mixture'})")
    dataset.augment = cfg.data.augment if cfg.data.augment.enabled else None
    return dataset


def plan_steps(cfg: Config, dataset: Dataset, world: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps)."""
    tc = cfg.train
    epoch_size = dataset.epoch_size() if isinstance(dataset, MixtureDataset) else len(dataset)
    steps_per_epoch = epoch_size // (tc.micro_batch_size * tc.grad_accum * world)
    if steps_per_epoch == 0:
        raise ValueError(
            f"data.train: {epoch_size} samples per epoch is less than one optimizer step "
            f"(micro_batch_size {tc.micro_batch_size} x grad_accum {tc.grad_accum} x {world} processes)"
        )
    return steps_per_epoch, tc.max_steps if tc.max_steps > 0 else tc.epochs * steps_per_epoch


def build_engine(cfg: Config, model: SkillGPT, total_steps: int, world: int, rank: int):
    """(DeepSpeed engine, LR scheduler). The frozen encoders stay outside the engine, in their declared
    dtype (model.encoder.dtype) whatever train.precision, on the engine's device."""
    import deepspeed

    tc = cfg.train
    if tc.activation_checkpointing:  # non-reentrant: works with frozen embeddings and LoRA as is
        model.causal_lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if tc.compile:
        compiled = compile_blocks(model, tc.compile_backend)
        if rank == 0:
            print(f"[skillgpt] train.compile: {len(compiled)} blocks compiled with {tc.compile_backend} "
                  "(the first steps include compile time)")
    encoders = model.detach_encoders()
    ds_config = make_deepspeed_config(cfg, world)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], tc, ds_config)
    warmup = math.ceil(tc.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(warmup_cosine, warmup=warmup, total=total_steps, min_ratio=tc.min_lr_ratio))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    encoders.to(engine.device).eval()
    engine.train()  # from_pretrained leaves the LLM in eval mode (no LoRA dropout)
    return engine, scheduler


def restore_state(engine, model: SkillGPT, previous: Path | None, cfg: Config, world: int, rank: int,
                  run_dir: Path, total_steps: int) -> TrainerState:
    """Counters, RNG and optimizer state of the checkpoint resumed from (fresh ones otherwise)."""
    global_batch = cfg.train.micro_batch_size * cfg.train.grad_accum * world
    if previous is None:
        return TrainerState(global_batch=global_batch, world_size=world)
    state = load_resume_state(engine, model, previous, cfg.train.seed)
    state.global_batch, state.world_size = global_batch, world
    if rank == 0:
        truncate_log(run_dir, state.global_step)
        print(f"[skillgpt] resumed from {previous} at step {state.global_step}/{total_steps}")
    return state


def setup(cfg: Config) -> Run:
    """Process group, run folder, model, data, engine, the state to start from, validation and reports."""
    rank, world = init_distributed()
    check_validation_config(cfg)
    cfg.train.grad_accum = derive_grad_accum(cfg.train, world)
    seed_everything(cfg.train.seed)
    cfg = record_lineage(cfg, cfg.train.output_dir)  # the parent checkpoint, once; paths that work from anywhere
    run_dir, previous = prepare_run_dir(cfg, rank, world)
    model, tokenizer = build_model(cfg)
    dataset = build_dataset(cfg, model, tokenizer, run_dir, rank)
    steps_per_epoch, total_steps = plan_steps(cfg, dataset, world)
    if previous is not None:
        load_trained_parts(model, previous, cfg)
    engine, scheduler = build_engine(cfg, model, total_steps, world, rank)
    state = restore_state(engine, model, previous, cfg, world, rank, run_dir, total_steps)
    wanted = cfg.train.keep_best or (cfg.train.eval_every > 0 and cfg.data.val)
    validator = Validator(cfg, model, tokenizer, engine) if wanted else None
    reporter = run_on_rank0("starting train.report_to", lambda: make_reporter(cfg, run_dir, state.global_step))
    return Run(cfg, rank, world, run_dir, previous, model, tokenizer, dataset, engine, scheduler, state,
               steps_per_epoch, total_steps, validator, reporter or SilentReporter())


# ---- steps, epochs, saving --------------------------------------------------------------------------
def validate(run: Run, loss_only: bool = False) -> dict:
    """Validation metrics on data.val (every rank runs it; a failure on any rank raises on every rank)."""
    metrics, failure, step = {}, None, run.state.global_step
    try:
        metrics = {"val_loss": run.validator.loss()} if loss_only else run.validator.run()
    except Exception as err:  # reported to every rank below
        failure = err
    raise_if_any(failure, f"validation at step {step}")
    run.validated = (step, metrics)
    if run.rank == 0:
        top1 = (f", val top-1 {100 * metrics['val_top1']:.1f}% ({metrics['val_n']} samples)"
                if metrics.get("val_top1") is not None else "")
        tqdm.write(f"[skillgpt] step {step}: val_loss {metrics['val_loss']:.4f}{top1}")
    return metrics


def save(run: Run) -> None:
    """A checkpoint (with this step's validation metrics in its metrics.json; train.keep_best validates
    the loss if this step has not been validated), then loss.png. Collective: a failure on any rank
    raises on every rank."""
    done = run.validated is not None and run.validated[0] == run.state.global_step
    metrics = run.validated[1] if done else None
    if metrics is None and run.cfg.train.keep_best:
        metrics = validate(run, loss_only=True)
    save_checkpoint(run.engine, run.model, run.cfg, run.tokenizer, run.state, run.run_dir, metrics)
    run.reporter.plot()


def epoch_batches(run: Run) -> Iterator[dict]:
    """Micro-batches of this process for the rest of the current epoch (resumes mid-epoch)."""
    tc, state = run.cfg.train, run.state
    run.dataset.set_epoch(state.epoch, tc.seed)
    order = epoch_order(run.dataset, tc.seed, state.epoch, tc.micro_batch_size, run.cfg.data.group_by_length)
    mine = rank_share(order[: run.steps_per_epoch * run.global_batch], tc.micro_batch_size, tc.grad_accum,
                      run.world, run.rank)
    return iter(DataLoader(
        run.dataset, batch_size=tc.micro_batch_size, sampler=mine[state.step_in_epoch * tc.grad_accum * tc.micro_batch_size :],
        num_workers=run.cfg.data.num_workers, collate_fn=partial(collate, pad_id=run.tokenizer.pad_token_id),
        prefetch_factor=run.cfg.data.prefetch_factor if run.cfg.data.num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(tc.seed + state.epoch),
    ))


def one_step(run: Run, batches: Iterator[dict], bad_in_a_row: int, bar: tqdm) -> int:
    """One optimizer step: train, advance the counters, validate when train.eval_every asks, log
    (metrics.jsonl, train.report_to). Returns the non-finite steps in a row."""
    tc, state = run.cfg.train, run.state
    tic = time.time()
    micro_batches = [next(batches) for _ in range(tc.grad_accum)]
    lr = run.scheduler.get_last_lr()[0]  # the rate this step uses
    loss, skipped = train_step(run.engine, micro_batches, run.engine.device, run.world, run.rank, state.global_step, run.cfg)
    state.global_step, state.step_in_epoch = state.global_step + 1, state.step_in_epoch + 1
    seconds = time.time() - tic
    record = {"step": state.global_step, "epoch": state.epoch, "loss": loss, "lr": lr, "seconds": round(seconds, 3),
              "samples_per_s": round(run.global_batch / max(seconds, 1e-9), 3)}
    bad_in_a_row = bad_in_a_row + 1 if skipped else 0
    if skipped:  # the batch is used up, the weights, optimizer state and LR schedule stay
        record["skipped"] = skipped
        _event(run.run_dir, run.rank, {"step": state.global_step, "epoch": state.epoch, "event": skipped,
                                       "batch": [i for b in micro_batches for i in b["ids"]], "in_a_row": bad_in_a_row})
    if eval_due(run.cfg, state.global_step, run.total_steps):
        record.update(validate(run))
    if run.rank == 0:
        _log(run.run_dir, record)
        run.reporter.log(record)
        shown = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}"}
        if run.validated is not None and run.validated[1].get("val_top1") is not None:
            shown["val_top1"] = f"{100 * run.validated[1]['val_top1']:.0f}%"
        bar.set_postfix(shown)
        bar.update(1)
    if bad_in_a_row >= tc.max_nonfinite:
        save(run)
        raise FloatingPointError(
            f"{bad_in_a_row} non-finite steps in a row at step {state.global_step} (train.max_nonfinite="
            f"{tc.max_nonfinite}); checkpoint saved in {run.run_dir}. Lower train.lr or check the data "
            f"(see {run.run_dir / 'events.jsonl'})")
    return bad_in_a_row


def run_steps(run: Run, stop: StopRequest) -> bool:
    """Train until the last step or an agreed stop request; returns whether it stopped early. Saves every
    train.save_every steps (or at each epoch end with save_every 0) and at the end."""
    tc, state = run.cfg.train, run.state
    bar = tqdm(total=run.total_steps, initial=state.global_step, desc=f"stage {run.cfg.stage}", disable=run.rank != 0)
    saved_at = state.global_step if run.previous is not None else -1
    stopping, bad_in_a_row = False, 0
    while state.global_step < run.total_steps and not stopping:
        batches = epoch_batches(run)
        while state.step_in_epoch < run.steps_per_epoch and state.global_step < run.total_steps and not stopping:
            bad_in_a_row = one_step(run, batches, bad_in_a_row, bar)
            if tc.save_every > 0 and state.global_step % tc.save_every == 0:
                save(run)
                saved_at = state.global_step
            stopping = stop_agreed(stop.signal is not None)
        if state.step_in_epoch >= run.steps_per_epoch:
            state.epoch, state.step_in_epoch = state.epoch + 1, 0
            if tc.save_every == 0 and state.global_step != saved_at:
                save(run)
                saved_at = state.global_step
    bar.close()
    if saved_at != state.global_step:
        save(run)
    return stopping


def train(cfg: Config) -> Path:
    """Run (or resume) the stage described by `cfg`; returns the newest checkpoint folder."""
    run = setup(cfg)
    try:
        with StopRequest() as stop:  # SIGTERM/SIGINT: finish the step, save, exit
            stopped = run_steps(run, stop)
    finally:
        run.reporter.close()
    if stopped and run.rank == 0:
        name = signal.Signals(stop.signal).name if stop.signal is not None else "a signal on another rank"
        print(f"[skillgpt] stopped by {name} at step {run.state.global_step}/{run.total_steps}; checkpoint saved. "
              "Run the same command again to resume.")
    return list_checkpoints(run.run_dir)[-1]
