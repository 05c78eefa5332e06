"""SkillGPT: frozen encoder -> projector -> causal LLM, features spliced at placeholder positions."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import Tensor, nn
from transformers import PreTrainedModel

from skillgpt.data.templates import PLACEHOLDERS

VIDEO_ID = PLACEHOLDERS["<video>"]
IGNORE_INDEX = -100


class SkillGPT(nn.Module):
    """The whole model. `forward` returns the mean loss over supervised (label != -100) tokens only."""

    def __init__(self, encoder: nn.Module, projector: nn.Module, llm: PreTrainedModel) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.llm = llm

    # ---- parts -------------------------------------------------------------------------------
    @property
    def causal_lm(self) -> PreTrainedModel:
        """The transformers model under any PEFT wrapper (LoRA layers stay injected inside it)."""
        return self.llm.get_base_model() if isinstance(self.llm, PeftModel) else self.llm

    def num_visual_tokens(self, num_clips: int) -> int:
        """How many `<video>` placeholder ids the data pipeline must insert per video."""
        return self.encoder.tokens_per_video(num_clips)

    # ---- embedding ---------------------------------------------------------------------------
    def visual_embeddings(self, video: Tensor) -> Tensor:
        """video [B, S, C, T, H, W] -> projected tokens [B, N, D_llm]."""
        feats = self.encoder(video)
        proj_dtype = next(self.projector.parameters()).dtype
        return self.projector(feats.to(proj_dtype))

    def embed(self, input_ids: Tensor, video: Tensor | None) -> Tensor:
        """Token embeddings with visual features scattered into the `<video>` positions."""
        table = self.causal_lm.get_input_embeddings()
        embeds = table(input_ids.clamp(min=0))
        mask = input_ids == VIDEO_ID
        n_slots = int(mask.sum())
        if video is None:
            if n_slots:
                raise ValueError(f"input has {n_slots} <video> placeholder tokens but no video was given")
            return embeds
        feats = self.visual_embeddings(video)
        if n_slots != feats.shape[0] * feats.shape[1]:
            raise ValueError(
                f"<video> placeholder tokens ({n_slots}) != visual tokens ({feats.shape[0]} videos x "
                f"{feats.shape[1]} tokens); the data pipeline and the encoder disagree"
            )
        return embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor, video: Tensor | None) -> Tensor:
        """Last hidden states of the decoder (no LM head applied)."""
        embeds = self.embed(input_ids, video)
        decoder = self.causal_lm.get_decoder()
        return decoder(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state

    def _supervised_logits(self, hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """LM head only at positions whose next token is supervised."""
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        logits = self.causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
        return logits, targets[keep], keep

    # ---- training / scoring ------------------------------------------------------------------
    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, video: Tensor | None = None, **_: Any
    ) -> Tensor:
        hidden = self.hidden_states(input_ids, attention_mask, video)
        logits, targets, _ = self._supervised_logits(hidden, labels)
        if targets.numel() == 0:
            return hidden.sum() * 0.0  # keeps the graph (and DeepSpeed's hooks) alive
        return F.cross_entropy(logits, targets)

    @torch.no_grad()
    def sequence_logprobs(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, video: Tensor | None = None
    ) -> Tensor:
        """Sum of log-probabilities of the supervised tokens of each sample: [B]."""
        hidden = self.hidden_states(input_ids, attention_mask, video)
        logits, targets, keep = self._supervised_logits(hidden, labels)
        token_lp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sample_of_token = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(keep)
        out = torch.zeros(input_ids.shape[0], device=input_ids.device, dtype=token_lp.dtype)
        return out.index_add_(0, sample_of_token[keep], token_lp)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, video: Tensor | None = None, **generate_kwargs: Any) -> Tensor:
        """Generate new token ids (KV cache on) for a prompt that may contain `<video>` slots."""
        embeds = self.embed(input_ids, video)
        attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        return self.causal_lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)
