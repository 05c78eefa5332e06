"""Stage-2 alignment pieces: signal positions, NExT-GPT's l2 loss, the projected conditioning and retrieval; a
few optimizer steps on the projector alone pull held-out conditioning to its own caption embedding."""
from __future__ import annotations

import pytest
import torch

from skillgpt.generation.alignment import conditioning, gather, l2_loss, retrieval_top1, signal_positions
from skillgpt.models.output_projectors import OutputProjectorConfig, build_output_projector


def test_signal_positions_and_errors() -> None:
    ids = torch.tensor([[5, 7, 100, 101, 102, 9], [100, 101, 102, 3, 3, 3]])
    assert signal_positions(ids, [100, 101, 102]).tolist() == [[2, 3, 4], [0, 1, 2]]
    with pytest.raises(ValueError, match="sample 1: 0 occurrences"):
        signal_positions(torch.tensor([[100, 101, 102], [1, 2, 3]]), [100, 101, 102])
    with pytest.raises(ValueError, match="not consecutive"):
        signal_positions(torch.tensor([[100, 5, 101, 102]]), [100, 101, 102])


def test_l2_loss_is_nextgpts() -> None:
    pred = torch.zeros(1, 2, 2)
    target = torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])
    assert l2_loss(pred, target).item() == pytest.approx((5.0 + 1.0) / 2)  # per-token distances 5 and 1
    with pytest.raises(ValueError, match="differ"):
        l2_loss(pred, torch.zeros(1, 3, 2))


def test_retrieval_top1() -> None:
    target = torch.eye(4).reshape(4, 2, 2)
    assert retrieval_top1(target * 3, target) == 1.0
    assert retrieval_top1(target.roll(1, 0), target) == 0.0


def test_projector_learns_to_retrieve_held_out_captions() -> None:
    torch.manual_seed(0)
    width, k, n = 16, 4, 64
    projector = build_output_projector(OutputProjectorConfig(kind="linear", in_dim=width, out_dim=8,
                                                              num_output_tokens=k))
    # stand-ins: each caption's LLM states at the signal tokens carry its content (plus noise); its cached
    # embedding is a fixed map of that content, one vector per conditioning token
    content = torch.randn(n, k, width)
    states = [torch.randn(n, 6, width) * 0.1 for _ in range(2)]
    states[-1][:, 1:1 + k] += content
    embeds = torch.randn(n, 6, width) * 0.1
    positions = torch.arange(1, 1 + k).expand(n, k)
    target = content @ torch.randn(width, 8)
    train, held = slice(0, 48), slice(48, n)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=5e-2)
    losses = []
    for _ in range(80):
        pred = conditioning([projector], [s[train] for s in states], [-1], embeds[train], positions[train])
        loss = l2_loss(pred, target[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        pred = conditioning([projector], [s[held] for s in states], [-1], embeds[held], positions[held])
        untrained = build_output_projector(OutputProjectorConfig(kind="linear", in_dim=width, out_dim=8,
                                                                  num_output_tokens=k))
        before = conditioning([untrained], [s[held] for s in states], [-1], embeds[held], positions[held])
    assert gather(states[-1], positions).shape == (n, k, width)
    assert retrieval_top1(pred, target[held]) >= 0.9 > retrieval_top1(before, target[held])
