"""Decoder-side alignment (NExT-GPT's stage 2): the LLM's states at a modality's signal tokens, projected by
the output projectors, against the decoder text encoder's embedding of the caption (cached once:
skillgpt.generation.caption_cache); and the retrieval check of the result.

As NExT-GPT's ``_train_with_mode``: the states are those *at* the signal-token positions (the k tokens
``[IMG0]..[IMGk-1]`` consecutive, in order, once per sample), of each layer in ``layers``, each layer through its
own projector together with the signal tokens' input embeddings, the outputs summed; the loss is NExT-GPT's
``l2_loss``: the Euclidean distance per conditioning token, averaged.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skillgpt.models.output_projectors import apply_output_projectors


def signal_positions(input_ids: Tensor, ids: Sequence[int]) -> Tensor:
    """[B, k] positions of the k signal tokens `ids` in every row of `input_ids` (consecutive, in order)."""
    ids_t = torch.as_tensor(list(ids), device=input_ids.device)
    starts = []
    for b, row in enumerate(input_ids):
        hits = (row == ids_t[0]).nonzero().flatten()
        if hits.numel() != 1:
            raise ValueError(f"sample {b}: {hits.numel()} occurrences of the first signal token {int(ids_t[0])} "
                             "(expected exactly one run of the modality's signal tokens)")
        start = int(hits[0])
        if start + len(ids_t) > row.numel() or not torch.equal(row[start:start + len(ids_t)], ids_t):
            raise ValueError(f"sample {b}: the signal tokens {list(map(int, ids_t))} are not consecutive and in order")
        starts.append(start)
    return torch.tensor(starts, device=input_ids.device).unsqueeze(1) + torch.arange(len(ids_t), device=input_ids.device)


def gather(states: Tensor, positions: Tensor) -> Tensor:
    """states [B, L, D] at positions [B, k] -> [B, k, D]."""
    return states.gather(1, positions.unsqueeze(-1).expand(-1, -1, states.shape[-1]))


def conditioning(projectors: Sequence[nn.Module], hidden_states: Sequence[Tensor], layers: Sequence[int],
                 input_embeds: Tensor, positions: Tensor) -> Tensor:
    """The decoder conditioning [B, T, D_dec]: projector i on layer ``layers[i]``'s states at the signal tokens
    (``hidden_states``: the LLM's per-layer states, embeddings first, as transformers returns them)."""
    picked = [gather(hidden_states[layer], positions) for layer in layers]
    return apply_output_projectors(projectors, picked, gather(input_embeds, positions))


def l2_loss(pred: Tensor, target: Tensor) -> Tensor:
    """NExT-GPT's alignment loss: Euclidean distance per conditioning token, mean over tokens and samples."""
    if pred.shape != target.shape:
        raise ValueError(f"conditioning {tuple(pred.shape)} and cached caption embeddings {tuple(target.shape)} differ")
    return ((pred.float() - target.float()) ** 2).sum(-1).sqrt().mean()


@torch.no_grad()
def nearest(pred: Tensor, targets: Tensor) -> Tensor:
    """For each conditioning [N, T, D], the index of the closest (cosine, flattened) of the M targets [M, T, D].
    Both sides are centred on the targets' mean first: what all captions share (start token, padding
    positions) says nothing about which caption it is, and would otherwise dominate the cosine."""
    if pred.shape[1:] != targets.shape[1:] or targets.shape[0] < 2:
        raise ValueError(f"retrieval needs [N, T, D] conditioning and [M >= 2, T, D] targets, got "
                         f"{tuple(pred.shape)} / {tuple(targets.shape)}")
    mean = targets.float().mean(0, keepdim=True)
    a = F.normalize((pred.float() - mean).flatten(1), dim=-1)
    b = F.normalize((targets.float() - mean).flatten(1), dim=-1)
    return (a @ b.t()).argmax(dim=1)


@torch.no_grad()
def retrieval_top1(pred: Tensor, target: Tensor) -> float:
    """Fraction of samples whose conditioning [N, T, D] is closest (cosine, flattened, centred: `nearest`) to its
    own caption's embedding among all N targets: the stage-2 check of ``skillgpt eval`` for the generation task."""
    if pred.shape != target.shape or pred.shape[0] < 2:
        raise ValueError(f"retrieval needs matching [N >= 2, T, D] tensors, got {tuple(pred.shape)} / {tuple(target.shape)}")
    best = nearest(pred, target)
    return float((best == torch.arange(pred.shape[0], device=pred.device)).float().mean())
