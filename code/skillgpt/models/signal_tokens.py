"""Signal tokens (NExT-GPT's ``[IMG0..k]``, ``[VID0..k]``, ``[AUD0..k]``): added to the tokenizer and the LLM, with
only their own embedding and LM-head rows trainable.

The vocabulary grows by ``resize_token_embeddings``; the new rows start as the mean of the old ones (transformers'
default). Training those rows alone must not make the whole embedding trainable (an Adam state of two
vocabulary-sized matrices for a few rows), so ``SignalRows`` holds two small trainable deltas, ``[n, D]`` each,
added by forward hooks: to the input embedding at signal-token ids, and to the LM head's logits of the signal
columns (``h @ delta.T``). The LLM's own matrices stay frozen; ``merge`` writes the deltas into them (export).
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

PREFIXES = {"image": "IMG", "video": "VID", "audio": "AUD"}
NEXTGPT_COUNTS = {"image": 4, "video": 24, "audio": 8}  # NExT-GPT's numbers of signal tokens


def signal_token_names(counts: Mapping[str, int]) -> dict[str, list[str]]:
    """{"image": ["[IMG0]", ...], ...} for the modalities with a positive count."""
    unknown = sorted(set(counts) - set(PREFIXES))
    if unknown:
        raise ValueError(f"signal tokens: unknown modalities {unknown}; expected {sorted(PREFIXES)}")
    for modality, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"signal tokens: the count for {modality} must be an integer >= 0, got {n!r}")
    return {m: [f"[{PREFIXES[m]}{i}]" for i in range(n)] for m, n in counts.items() if n > 0}


def add_signal_tokens(tokenizer: Any, llm: Any, counts: Mapping[str, int]) -> dict[str, list[int]]:
    """Add the signal tokens to `tokenizer` (plain added tokens, as NExT-GPT's ``add_tokens``), grow `llm`'s
    embeddings to the new vocabulary; returns their ids by modality (tokens already there keep their ids)."""
    names = signal_token_names(counts)
    tokenizer.add_tokens([t for tokens in names.values() for t in tokens])
    if llm.get_input_embeddings().num_embeddings < len(tokenizer):
        llm.resize_token_embeddings(len(tokenizer))
    return {m: tokenizer.convert_tokens_to_ids(tokens) for m, tokens in names.items()}


class SignalRows(nn.Module):
    """Trainable embedding and LM-head rows of the signal tokens of `llm` (hooks; the LLM stays frozen)."""

    def __init__(self, llm: Any, ids: list[int]) -> None:
        super().__init__()
        embedding, head = llm.get_input_embeddings(), llm.get_output_embeddings()
        width, vocab = embedding.embedding_dim, embedding.num_embeddings
        if not ids or len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= vocab:
            raise ValueError(f"signal token ids {ids} must be distinct ids of the {vocab}-token vocabulary")
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long), persistent=False)
        row_of_id = torch.full((max(ids) + 1,), -1, dtype=torch.long)  # vocabulary id -> delta row (-1: none)
        row_of_id[self.ids] = torch.arange(len(ids))
        self.register_buffer("row_of_id", row_of_id.to(embedding.weight.device), persistent=False)
        self.embed_delta = nn.Parameter(torch.zeros(len(ids), width, dtype=embedding.weight.dtype,
                                                    device=embedding.weight.device))
        self.tied = head is None or head.weight is embedding.weight
        self.head_delta = None if self.tied else nn.Parameter(
            torch.zeros(len(ids), width, dtype=head.weight.dtype, device=head.weight.device))
        self._hooks = [embedding.register_forward_hook(self._embed_hook)]
        if head is not None:
            self._hooks.append(head.register_forward_hook(self._head_hook))

    def _embed_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        ids = inputs[0]
        last = self.row_of_id.numel() - 1
        row = torch.where(ids <= last, self.row_of_id[ids.clamp(max=last)], -1)
        hit = row >= 0
        if not bool(hit.any()):
            return output + 0.0 * self.embed_delta.sum().to(output.dtype)  # the delta stays in the graph
        delta = self.embed_delta[row.clamp(min=0)].to(output.dtype) * hit.unsqueeze(-1).to(output.dtype)
        return output + delta

    def _head_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        delta = self.embed_delta if self.tied else self.head_delta
        extra = inputs[0].to(delta.dtype) @ delta.t()  # [..., n]
        return output.index_add(-1, self.ids.to(output.device), extra.to(output.dtype))

    def remove(self) -> None:
        """Detach the hooks (the deltas are then ignored)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @torch.no_grad()
    def merge(self, llm: Any) -> None:
        """Write the deltas into `llm`'s embedding and head rows and remove the hooks (for export)."""
        embedding, head = llm.get_input_embeddings(), llm.get_output_embeddings()
        embedding.weight[self.ids] += self.embed_delta.to(embedding.weight.dtype)
        if not self.tied:
            head.weight[self.ids] += self.head_delta.to(head.weight.dtype)
        self.remove()
        self.embed_delta.zero_()
        if self.head_delta is not None:
            self.head_delta.zero_()
