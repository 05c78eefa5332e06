"""Process bodies for tests/train/test_collectives.py (spawned; a plain module so children can import it).

Each worker joins a 2-process group on 127.0.0.1, runs one scenario and writes its outcome to
<out>/rank<R>.json."""
from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist

GROUP_TIMEOUT_S = 300  # longer than the test's own timeout: a hang shows as a hang, not a gloo timeout


def _join(rank: int, port: int, backend: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=2, timeout=timedelta(seconds=GROUP_TIMEOUT_S))


def _write(out: str, rank: int, result: dict) -> None:
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))


def bookkeeping(rank: int, port: int, out: str) -> None:
    """The loop's bookkeeping collectives under a default group that serves CUDA tensors only (NCCL's
    restriction, emulated on CPU by gloo registered for cuda only)."""
    _join(rank, port, "cuda:gloo")
    from skillgpt.distributed import all_reduce_sum, first_failure, run_on_rank0
    from skillgpt.train.loop import global_token_count, stop_agreed

    result: dict = {}
    try:
        dist.all_reduce(torch.ones(()))
        result["raw_cpu_all_reduce"] = "accepted"
    except RuntimeError as err:
        result["raw_cpu_all_reduce"] = str(err)
    try:
        labels = torch.full((1, 6), -100)
        labels[0, 1 : 2 + rank] = 7  # rank 0: 1 supervised token, rank 1: 2
        result["tokens"] = global_token_count([{"labels": labels}])
        result["loss_total"] = all_reduce_sum(torch.tensor(rank + 0.5)).item()
        result["stop"] = stop_agreed(rank == 1)
        result["no_stop"] = stop_agreed(False)
        result["saved"] = run_on_rank0("saving", lambda: "written")
        result["agreed_problem"] = first_failure("bad file" if rank == 1 else None)
    except Exception as err:  # the outcome is checked by the test
        result["error"] = f"{type(err).__name__}: {err}"
    _write(out, rank, result)
    dist.destroy_process_group()


def failing_save(rank: int, port: int, out: str) -> None:
    """save_checkpoint where rank 0's file writing fails (a full disk); the gathers are stubbed (no engine)."""
    _join(rank, port, "gloo")
    import skillgpt.checkpoint.resume as resume

    def disk_full(*_args, **_kwargs) -> None:
        raise OSError(28, "No space left on device")

    resume.gather_trainable = lambda model: {}
    resume.save_optimizer_state = lambda *args, **kwargs: None
    resume.save_trained_parts = disk_full
    cfg = SimpleNamespace(train=SimpleNamespace(keep_last=0, keep_best=None))
    try:
        resume.save_checkpoint(None, None, cfg, None, resume.TrainerState(global_step=2), Path(out) / "run")
        result = {"error": None}
    except Exception as err:  # the outcome is checked by the test
        result = {"error": f"{type(err).__name__}: {err}"}
    _write(out, rank, result)
    dist.destroy_process_group()
