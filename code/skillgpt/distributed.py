"""Bookkeeping collectives (token counts, loss totals, stop and save agreement) that work whatever the
backend of the default process group.

NCCL serves CUDA tensors only ("No backend type associated with device type cpu" for a CPU tensor);
gloo serves CPU tensors. Every small collective of the trainer goes through here: the tensor is put on
a device the group serves (its accelerator when the group serves it), or, when the group serves neither
the CPU nor an available accelerator, reduced over a gloo side group of the same ranks (created once per
default group, by every rank at the same collective call). Without a process group every function
is the identity.

A failure on some ranks is turned into the same error on every rank (`first_failure`, `raise_if_any`,
`run_on_rank0`), so no rank waits at a collective for a rank that has already failed.
"""
from __future__ import annotations

import os
import socket
import weakref
from typing import Callable, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# default process group -> its gloo side group (a cache: the side group lives as long as the group)
_CPU_SIDE_GROUPS: "weakref.WeakKeyDictionary[dist.ProcessGroup, dist.ProcessGroup]" = weakref.WeakKeyDictionary()


class RankFailure(RuntimeError):
    """Raised on the ranks that did not fail, naming the rank that did and its error."""


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


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
        if torch.accelerator.is_available():  # before any collective: NCCL needs one device per process
            torch.accelerator.set_device_index(int(os.environ.get("LOCAL_RANK", "0")))
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def close_distributed() -> None:
    """End a launched multi-process run cleanly: every rank meets, then the process groups (and their gloo /
    NCCL worker threads) are torn down here instead of during interpreter exit, where a rank once aborted
    ("terminate called without an active exception") after saving. A one-process group stays, so in-process
    callers (tests, notebooks) can train again."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
        _CPU_SIDE_GROUPS.clear()
        dist.destroy_process_group()


def served_device_types(group: Optional[dist.ProcessGroup] = None) -> set[str]:
    """Device types the group's backends serve, from `dist.get_backend_config` ("cpu:gloo,cuda:nccl")."""
    return {part.split(":")[0].strip() for part in dist.get_backend_config(group).split(",")}


def _route() -> tuple[dist.ProcessGroup, torch.device]:
    """(group, device) for a bookkeeping collective over all ranks of the default group."""
    group = dist.group.WORLD
    served = served_device_types(group)
    if "cpu" in served:
        return group, torch.device("cpu")
    if torch.accelerator.is_available():
        accel = torch.accelerator.current_accelerator()
        if accel is not None and accel.type in served:
            return group, torch.device(accel.type, torch.accelerator.current_device_index())
    side = _CPU_SIDE_GROUPS.get(group)
    if side is None:  # collective: every rank reaches its first bookkeeping collective together
        side = _CPU_SIDE_GROUPS[group] = dist.new_group(backend="gloo")
    return side, torch.device("cpu")


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of `value` over all ranks, on `value`'s device (any device, any backend). A one-process group
    still runs the collective, so a 1-GPU run exercises the NCCL path."""
    if not dist.is_initialized():
        return value
    group, device = _route()
    out = value.detach().to(device, copy=True)
    dist.all_reduce(out, group=group)
    return out.to(value.device)


def agree(flag: bool) -> bool:
    """True on every rank when any rank's `flag` is true."""
    return bool(all_reduce_sum(torch.tensor(float(flag))).item() > 0)


def first_failure(problem: Optional[str]) -> Optional[str]:
    """The first rank's problem (None if no rank has one), the same on every rank: "rank R: ..." when
    several processes run."""
    if not agree(problem is not None):
        return None
    if world_size() == 1:
        return problem
    problems = all_gather(problem)
    r, text = next((r, p) for r, p in enumerate(problems) if p is not None)
    return f"rank {r}: {text}"


def all_gather(value: T) -> list[T]:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if not dist.is_initialized():
        return [value]
    group, _ = _route()
    out: list = [None] * world_size()
    dist.all_gather_object(out, value, group=group)
    return out


def raise_if_any(error: Optional[BaseException], what: str) -> None:
    """Collective: re-raise `error` on the rank that had it and raise RankFailure naming it on every
    other rank; return on every rank when no rank failed."""
    problem = first_failure(None if error is None else f"{type(error).__name__}: {error}")
    if problem is None:
        return
    if error is not None:
        raise error
    raise RankFailure(f"{what} failed on another process ({problem}); this process stops too")


def run_on_rank0(what: str, fn: Callable[[], T]) -> Optional[T]:
    """Run `fn` on rank 0 only (others get None); a failure there raises on every rank, and the call is
    a barrier."""
    error: Optional[BaseException] = None
    result: Optional[T] = None
    if rank() == 0:
        try:
            result = fn()
        except Exception as err:  # reported to every rank below
            error = err
    raise_if_any(error, what)
    return result


def work_share(items: Sequence[T], rank_: Optional[int] = None, world: Optional[int] = None) -> list[T]:
    """This rank's share of `items` for work split across ranks: item i goes to rank i % world."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    return [item for i, item in enumerate(items) if i % w == r]
