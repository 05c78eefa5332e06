"""Which samples each optimizer step and each process see: a function of (seed, epoch) only.

The epoch's order is global. Optimizer step s takes the next `global_batch` samples of it, cut into
micro-batches; micro-batch m of a step goes to process m % world. The same micro-batches make each step
whatever the number of processes, so a run resumed on a different number of processes (same global
batch) continues with exactly the samples the original run would have used.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from skillgpt.data.augment import length_grouped
from skillgpt.data.mixture import MixtureDataset


def epoch_order(dataset: Dataset, seed: int, epoch: int, micro_batch: int, group_by_length: bool) -> list[int]:
    """The whole epoch's shuffled sample order (optionally length-grouped into micro-batches)."""
    if isinstance(dataset, MixtureDataset):
        order = dataset.epoch_order(seed, epoch)
    else:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(dataset), generator=g).tolist()
    if group_by_length:
        order = length_grouped(order, dataset.group_keys(), micro_batch)
    return order


def rank_share(order: list[int], micro_batch: int, grad_accum: int, world: int, rank: int) -> list[int]:
    """This process's samples in the order it consumes them (whole optimizer steps only)."""
    per_step = micro_batch * grad_accum * world
    out: list[int] = []
    for start in range(0, len(order) - per_step + 1, per_step):
        for m in range(grad_accum):
            first = start + (m * world + rank) * micro_batch
            out += order[first : first + micro_batch]
    return out
