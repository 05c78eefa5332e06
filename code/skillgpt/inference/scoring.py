"""Label scoring: the log-likelihood of candidate answers, with each sample's media encoded once and the
prompt they share run once through the LLM.

``encode_media`` runs the frozen encoder over a sample's items and returns them as feature dicts, which
every later step (scoring, generation) takes as they are, so the encoder runs once per sample.
``score_sequences`` runs the longest prefix the token sequences share (everything before the first
answer token) once with a KV cache, repeats that cache per sequence and scores each continuation
through the causal LM's own forward, so the model's logit post-processing (Granite ``logits_scaling``,
Cohere ``logit_scale``, Gemma-2 soft-capping) applies as it does in generation.
"""
from __future__ import annotations

import inspect
from collections import Counter
from typing import Any, Optional

import torch
from torch import Tensor, nn

from skillgpt.constants import IGNORE_INDEX
from skillgpt.data.media import Payload, collate_media, media_to

Media = list[tuple[str, Payload]]  # (kind, pixels or encoder features by branch) in placeholder order
Tokens = dict[str, list[int]]  # {"input_ids", "labels"} as tokenize_conversation returns them


@torch.no_grad()
def encode_media(model: nn.Module, media: Media, device: torch.device) -> Media:
    """`media` with every pixel/log-mel payload replaced by its encoder features ({branch: [N, D]}); one
    encoder call per kind. Items that already are features (feature cache, earlier call) pass through."""
    raw = [(kind, p) for kind, p in media if not isinstance(p, dict)]
    if not raw:
        return list(media)
    feats = {kind: model.encode(kind, x) for kind, x in media_to(collate_media([raw]), device).items()}
    taken: Counter[str] = Counter()
    out: Media = []
    for kind, payload in media:
        if isinstance(payload, dict):
            out.append((kind, payload))
            continue
        row = taken[kind]
        taken[kind] += 1
        out.append((kind, {branch: f[row] for branch, f in feats[kind].items()}))
    return out


def shared_prefix_length(seqs: list[Tokens]) -> int:
    """Tokens all sequences share before any of them has a supervised (answer) token."""
    first = []
    for i, s in enumerate(seqs):
        supervised = [j for j, lab in enumerate(s["labels"]) if lab != IGNORE_INDEX]
        if not supervised:
            raise ValueError(f"sequence {i} has no answer tokens to score")
        first.append(supervised[0])
    n = min(first)
    ref = seqs[0]["input_ids"]
    for s in seqs[1:]:
        ids = s["input_ids"]
        n = next((j for j in range(n) if ids[j] != ref[j]), n)
    if n < 1:
        raise ValueError("the sequences share no prompt token to score their answers from")
    return n


def _last_logits_only(lm: nn.Module) -> dict[str, Any]:
    """`logits_to_keep=1` where the model's forward takes it (the prefix needs only its last logits)."""
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(lm.forward).parameters else {}


def _pad(rows: list[list[int]], value: int, device: torch.device) -> Tensor:
    longest = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (longest - len(r)) for r in rows], dtype=torch.long, device=device)


@torch.no_grad()
def score_sequences(model: nn.Module, seqs: list[Tokens], media: Optional[Media], device: torch.device,
                    normalize: bool = False) -> Tensor:
    """Sum of the log-probabilities of each sequence's supervised tokens ([len(seqs)], fp32), all sharing
    `media`; with `normalize`, their mean per token. Equal to scoring each full sequence on its own."""
    lm = model.causal_lm
    n = shared_prefix_length(seqs)
    prefix = torch.tensor([seqs[0]["input_ids"][:n]], device=device)
    batch_media = media_to(collate_media([media]), device) if media else None
    out = lm(inputs_embeds=model.embed(prefix, batch_media), attention_mask=torch.ones_like(prefix),
             use_cache=True, **_last_logits_only(lm))
    first = out.logits[:, -1:].float().log_softmax(-1)  # predicts token n: [1, 1, V]
    cache = out.past_key_values
    cache.batch_repeat_interleave(len(seqs))
    ids = _pad([s["input_ids"][n:] for s in seqs], 0, device)
    targets = _pad([s["labels"][n:] for s in seqs], IGNORE_INDEX, device)
    filled = _pad([[1] * (len(s["input_ids"]) - n) for s in seqs], 0, device)
    mask = torch.cat([torch.ones(len(seqs), n, dtype=torch.long, device=device), filled], dim=1)
    rest = lm(inputs_embeds=model.embed(ids, None), attention_mask=mask, past_key_values=cache, use_cache=True)
    logp = torch.cat([first.expand(len(seqs), -1, -1), rest.logits[:, :-1].float().log_softmax(-1)], dim=1)
    keep = targets != IGNORE_INDEX
    token_lp = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
    total = token_lp.sum(dim=1)
    return (total / keep.sum(dim=1)).cpu() if normalize else total.cpu()
