"""Bookkeeping collectives under NCCL's device restriction, and a rank-0 save failure reaching every rank.

NCCL serves CUDA tensors only. It is emulated on CPU by a default group whose only backend is gloo
registered for CUDA (`backend="cuda:gloo"`): a CPU tensor is refused exactly as NCCL refuses it ("No
backend type associated with device type cpu"), which the test checks first, so the emulation is real.

How the tests were checked to distinguish: the loop's old bookkeeping (`dist.all_reduce` of a CPU tensor
for the token count in `train_step` and the stop flag in `_agreed`), copied into a scratch worker outside
the repository, fails `test_bookkeeping_collectives_work_when_the_group_serves_only_cuda` with that
error; with the old `save_checkpoint` (rank 0 raises, rank 1 waits at the final barrier) rank 1 ends
with gloo's "Connection closed by peer" only once rank 0's process has exited (on NCCL it waits for the
collective timeout), which names no cause, so `test_a_rank0_save_failure_stops_every_rank` fails.
"""
from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
import collective_workers  # noqa: E402  (spawned children import it by this name)

TIMEOUT_S = 90


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two(worker, out: Path) -> list[dict]:
    """Run `worker` on 2 spawned processes; fail (after killing them) if they do not end in time."""
    ctx = mp.get_context("spawn")
    port = _port()
    procs = [ctx.Process(target=worker, args=(rank, port, str(out))) for rank in range(2)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + TIMEOUT_S
    for p in procs:
        p.join(max(deadline - time.monotonic(), 0.1))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    assert not hung, f"rank(s) {hung} still running after {TIMEOUT_S} s (hung at a collective)"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def test_bookkeeping_collectives_work_when_the_group_serves_only_cuda(tmp_path):
    results = _run_two(collective_workers.bookkeeping, tmp_path)
    for r in results:
        assert "No backend type associated with device type cpu" in r["raw_cpu_all_reduce"]  # emulation is real
        assert "error" not in r, r["error"]
        assert r["tokens"] == 3.0 and r["loss_total"] == 2.0
        assert r["stop"] is True and r["no_stop"] is False
    assert [r["saved"] for r in results] == ["written", None]
    assert [r["agreed_problem"] for r in results] == ["rank 1: bad file"] * 2


def test_a_rank0_save_failure_stops_every_rank(tmp_path):
    results = _run_two(collective_workers.failing_save, tmp_path)
    assert results[0]["error"].startswith("OSError: ")
    assert "checkpoint-2 failed" in results[0]["error"] and "No space left" in results[0]["error"]
    assert results[1]["error"].startswith("RankFailure: ")
    assert "rank 0" in results[1]["error"] and "No space left" in results[1]["error"]
    assert not list((tmp_path / "run").glob(".tmp-*")) and not list((tmp_path / "run").glob("checkpoint-*"))
