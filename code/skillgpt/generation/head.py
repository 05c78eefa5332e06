"""The generation head of an LLM: its signal tokens (trainable rows only) and, per modality, one output projector
per chosen LLM layer, as NExT-GPT's decoder side is assembled. What NExT-GPT's stage 2 trains.

``GenerationHead(llm, tokenizer, {"image": 4}, {"image": OutputProjectorConfig(out_dim=768, ...)})`` adds
``[IMG0]..[IMG3]`` to the tokenizer and the LLM, makes their rows trainable (``SignalRows``) and builds the
projectors at the LLM's width. ``conditioning`` / ``alignment_loss`` take the LLM's outputs for a batch whose rows
each hold one run of a modality's signal tokens (skillgpt.generation.alignment).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from skillgpt.generation.alignment import conditioning, l2_loss, signal_positions
from skillgpt.models.output_projectors import OutputProjectorConfig, build_output_projector
from skillgpt.models.signal_tokens import SignalRows, add_signal_tokens, signal_token_names


class GenerationHead(nn.Module):
    """Signal-token rows + output projectors; `layers` are hidden-state indices (-1: the last layer's output)."""

    def __init__(self, llm: Any, tokenizer: Any, counts: Mapping[str, int],
                 projectors: Mapping[str, OutputProjectorConfig], layers: Sequence[int] = (-1,)) -> None:
        super().__init__()
        missing = sorted(m for m, n in counts.items() if n > 0 and m not in projectors)
        if missing:
            raise ValueError(f"generation: no output projector settings for {missing}")
        self.names = signal_token_names(counts)
        self.signal_ids = add_signal_tokens(tokenizer, llm, counts)
        self.rows = SignalRows(llm, [i for ids in self.signal_ids.values() for i in ids])
        width = llm.get_input_embeddings().embedding_dim
        self.layers = list(layers)
        self.projectors = nn.ModuleDict({
            m: nn.ModuleList(build_output_projector(replace(projectors[m], in_dim=width)) for _ in self.layers)
            for m in self.signal_ids})

    def signal_text(self, modality: str) -> str:
        """The run of signal tokens a reply holds to ask for `modality`, e.g. "[IMG0][IMG1][IMG2][IMG3]"."""
        return "".join(self.names[modality])

    def conditioning(self, modality: str, hidden_states: Sequence[Tensor], input_embeds: Tensor,
                     input_ids: Tensor) -> Tensor:
        """The decoder conditioning [B, T, D] of every row (hidden_states: all layers, embeddings first)."""
        positions = signal_positions(input_ids, self.signal_ids[modality])
        return conditioning(self.projectors[modality], hidden_states, self.layers, input_embeds, positions)

    def alignment_loss(self, modality: str, hidden_states: Sequence[Tensor], input_embeds: Tensor,
                       input_ids: Tensor, target: Tensor) -> Tensor:
        """NExT-GPT's stage-2 loss against the cached caption embeddings `target` [B, T, D]."""
        return l2_loss(self.conditioning(modality, hidden_states, input_embeds, input_ids), target)
