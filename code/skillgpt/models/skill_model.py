"""SkillGPT: frozen encoder -> projector -> causal LLM, features spliced at placeholder positions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from peft import PeftModel
from torch import Tensor, nn
from transformers import PreTrainedModel

from skillgpt.constants import IGNORE_INDEX, KIND_OF_PLACEHOLDER, PLACEHOLDER_OF, PLACEHOLDERS, Payload
from skillgpt.models.layout import TokenLayout

__all__ = ["IGNORE_INDEX", "Branch", "Payload", "SkillGPT", "pick_frames"]  # IGNORE_INDEX, Payload: old import path


@dataclass(frozen=True)
class Branch:
    """One encoder + projector pair of a tower; `frames` picks that many context frames from the clips."""

    name: str
    frames: Optional[int] = None


def pick_frames(pixels: Tensor, frames: int, crops: int = 1) -> Tensor:
    """[..., S * crops, C, T, H, W] (clip-major) -> [..., frames * crops, C, 1, H, W]: frames spread evenly
    over all S*T frames, each frame taken in every crop (frame-major, as clips of one frame)."""
    *lead, rows, c, t, h, w = pixels.shape
    if crops < 1 or rows % crops:
        raise ValueError(f"pixels have {rows} clip rows, not num_clips x crops for crops={crops}")
    s = rows // crops
    per_crop = pixels.reshape(*lead, s, crops, c, t, h, w).movedim(-3, -5)  # [..., S, T, crops, C, H, W]
    flat = per_crop.reshape(*lead, s * t, crops, c, h, w)
    idx = torch.linspace(0, s * t - 1, frames, device=pixels.device).floor().long()
    return flat.index_select(len(lead), idx).reshape(*lead, frames * crops, c, h, w).unsqueeze(-3)


class SkillGPT(nn.Module):
    """The whole model. `forward` returns the loss over supervised (label != -100) tokens only.

    `encoder` and `projector` are ModuleDicts keyed by branch (video, context, audio); `branches` says
    which branches (in token order) fill each tower: `<video>` and `<image>` use the video tower,
    `<audio>` the audio tower. `layouts[kind][branch]` is the token layout for that placeholder kind;
    `crops[kind]` (default 1) the spatial crops per clip of that kind's pixels (``data.video.num_crops``
    for videos), which the video-tower encoders fold (see skillgpt.models.layout).
    """

    def __init__(self, encoder: nn.ModuleDict, projector: nn.ModuleDict, llm: PreTrainedModel,
                 layouts: dict[str, dict[str, TokenLayout]], branches: dict[str, list[Branch]],
                 crops: Optional[dict[str, int]] = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        self.llm = llm
        self.layouts = layouts
        self.branches = branches
        self.crops = dict(crops or {})
        self.generation: Optional[nn.Module] = None  # signal tokens + output projectors (models/build.py)

    # ---- parts -------------------------------------------------------------------------------
    def detach_encoders(self) -> nn.ModuleDict:
        """Take the frozen encoders out of the module tree (parameters(), to(), state_dict()) so that a
        DeepSpeed engine neither casts (bf16/fp16) nor partitions (ZeRO-3) them: they keep their declared
        dtype (model.encoder.dtype). `self.encoder` still returns them; the caller places them on a device."""
        encoders = self._modules.pop("encoder")
        self.__dict__["encoder"] = encoders
        return encoders

    @property
    def causal_lm(self) -> PreTrainedModel:
        """The transformers model under any PEFT wrapper (LoRA layers stay injected inside it)."""
        return self.llm.get_base_model() if isinstance(self.llm, PeftModel) else self.llm

    def tower(self, kind: str) -> list[Branch]:
        branches = self.branches.get("audio" if kind == "audio" else "video", [])
        if not branches:
            raise ValueError(f"this model has no encoder for {kind} (enable model.{kind}.enabled)")
        return branches

    def num_tokens(self, kind: str) -> int:
        """Placeholder ids the data pipeline inserts per `kind` item (video, image or audio)."""
        return sum(self.projector[b.name].output_tokens(self.layouts[kind][b.name]) for b in self.tower(kind))

    def num_visual_tokens(self) -> int:
        """How many `<video>` placeholder ids the data pipeline must insert per video."""
        return self.num_tokens("video")

    def placeholder_tokens(self) -> dict[str, int]:
        """Token count of every placeholder this model can fill, e.g. {"<video>": 16, "<image>": 2}."""
        kinds = ["video", "image"] + (["audio"] if self.branches.get("audio") else [])
        return {PLACEHOLDER_OF[k]: self.num_tokens(k) for k in kinds}

    # ---- embedding ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, kind: str, pixels: Tensor) -> dict[str, Tensor]:
        """Frozen encoder features of a batch of `kind` items, by branch: {branch: [M, N, D]}.

        Videos come as [M, S, C, T, H, W] (fused views: [M, V, S, C, T, H, W]), images as
        [M, 1, C, T, H, W], audio as [M, S, 1, mel, frames]; with `crops[kind]` = K > 1 a video's S rows
        are its clips x K crops, clip-major. This is what the feature cache stores."""
        out, crops = {}, self.crops.get(kind, 1)
        extra = {"crops": crops} if crops != 1 else {}  # encoders that never see crops keep forward(x)
        for b in self.tower(kind):
            x, encoder = pick_frames(pixels, b.frames, crops) if b.frames else pixels, self.encoder[b.name]
            if x.ndim == 7:  # fused views [M, V, ...]: views encoded as a batch, tokens view-major
                out[b.name] = encoder(x.flatten(0, 1), **extra).reshape(x.shape[0], -1, encoder.out_dim)
            else:
                out[b.name] = encoder(x, **extra)
        return out

    def project(self, kind: str, feats: dict[str, Tensor]) -> Tensor:
        """Branch features -> LLM embeddings [M, N, D_llm], branches concatenated in tower order."""
        parts = []
        for b in self.tower(kind):
            proj = self.projector[b.name]
            x = feats[b.name].to(next(proj.parameters()).dtype)
            parts.append(proj(x, self.layouts[kind][b.name]))
        return torch.cat(parts, dim=1)

    def embed(self, input_ids: Tensor, media: Optional[dict[str, Payload]]) -> Tensor:
        """Token embeddings with each kind's projected features scattered into its placeholder positions."""
        embeds = self.causal_lm.get_input_embeddings()(input_ids.clamp(min=0))
        media = media or {}
        for placeholder, kind in KIND_OF_PLACEHOLDER.items():
            mask = input_ids == PLACEHOLDERS[placeholder]
            n_slots = int(mask.sum())
            payload = media.get(kind)
            if payload is None:
                if n_slots:
                    raise ValueError(f"input has {n_slots} {placeholder} placeholder tokens but no {kind} was given")
                continue
            feats = self.project(kind, payload if isinstance(payload, dict) else self.encode(kind, payload))
            if n_slots != feats.shape[0] * feats.shape[1]:
                raise ValueError(
                    f"{placeholder} placeholder tokens ({n_slots}) != {kind} tokens ({feats.shape[0]} items x "
                    f"{feats.shape[1]} tokens); the data pipeline and the encoder disagree"
                )
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))
        return embeds

    def hidden_states(self, input_ids: Tensor, attention_mask: Tensor, media: Optional[dict[str, Payload]]) -> Tensor:
        """Last hidden states of the decoder (no LM head applied; no KV cache built)."""
        embeds = self.embed(input_ids, media)
        decoder = self.causal_lm.get_decoder()
        return decoder(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).last_hidden_state

    def supervised_logits(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, media: Optional[dict[str, Payload]] = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """fp32 logits [K, V] at the K positions whose next token is supervised, their targets [K] and the
        mask [B, L-1] of those positions (row-major order, as `logits`).

        The causal LM's own forward computes them, so whatever it does after its LM head applies exactly as
        in generation (Granite's `logits_scaling`, Cohere's `logit_scale`, Gemma-2's final soft-capping);
        its `logits_to_keep` boolean mask makes the head run on the supervised rows only (never [B, L, V]).
        No KV cache is built."""
        logits, targets, keep, _ = self._supervised(input_ids, attention_mask, labels, media)
        return logits, targets, keep

    def supervised_states(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, media: Optional[dict[str, Payload]] = None
    ) -> tuple[Tensor, Tensor, Tensor, Any, Tensor]:
        """`supervised_logits` plus every layer's hidden states (embeddings first) and the input embeddings,
        as the alignment loss reads them (skillgpt.eval.generation)."""
        logits, targets, keep, (states, embeds) = self._supervised(input_ids, attention_mask, labels, media, hidden=True)
        return logits, targets, keep, states, embeds

    def _supervised(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor,
                    media: Optional[dict[str, Payload]], hidden: bool = False) -> tuple[Tensor, Tensor, Tensor, Any]:
        """supervised_logits plus, with `hidden`, (all layers' hidden states, input embeddings)."""
        targets = labels[:, 1:]
        keep = targets != IGNORE_INDEX
        rows = F.pad(keep, (0, 1))  # position t predicts token t+1; the last position predicts nothing
        embeds = self.embed(input_ids, media)
        out = self.causal_lm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False,
                             logits_to_keep=rows, output_hidden_states=hidden)
        logits, targets = out.logits, targets[keep]
        if logits.shape[:-1] != targets.shape:
            raise RuntimeError(
                f"{type(self.causal_lm).__name__} ignored logits_to_keep (a [B, L] boolean mask): got logits "
                f"{tuple(logits.shape)}, expected [{targets.numel()}, V]; use the pinned transformers (5.x)")
        return logits.float(), targets, keep, ((out.hidden_states, embeds) if hidden else None)

    # ---- training / scoring ------------------------------------------------------------------
    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, media: Optional[dict[str, Payload]] = None,
        num_tokens: Optional[float] = None, caption_embeds: Optional[dict[str, tuple[Tensor, Tensor]]] = None,
        **_: Any,
    ) -> Tensor:
        """Cross-entropy over supervised tokens: their mean, or with `num_tokens` their sum divided by it
        (the trainer passes the supervised-token count of the whole global batch, so how a batch is split
        into micro-batches and processes does not change what is learned). With `caption_embeds`
        ({modality: (rows [n], cached caption embeddings [n, T, D])}, NExT-GPT's stage 2) the alignment loss of
        those rows' signal tokens is added (skillgpt.generation.head)."""
        hidden = bool(caption_embeds)
        if hidden and self.generation is None:
            raise ValueError("caption embeddings were given but the model has no signal tokens (model.generation)")
        logits, targets, _, states = self._supervised(input_ids, attention_mask, labels, media, hidden=hidden)
        if targets.numel() == 0:
            loss = logits.sum() * 0.0  # keeps the graph (and DeepSpeed's hooks) alive
        elif num_tokens is None:
            loss = F.cross_entropy(logits, targets)
        else:
            loss = F.cross_entropy(logits, targets, reduction="sum") / num_tokens
        for modality, (rows, target) in (caption_embeds or {}).items():
            layers, embeds = states
            loss = loss + self.generation.alignment_loss(modality, [h[rows] for h in layers], embeds[rows],
                                                         input_ids[rows], target.to(embeds.device))
        return loss

    @torch.no_grad()
    def sequence_logprobs(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, media: Optional[dict[str, Payload]] = None
    ) -> Tensor:
        """Sum of log-probabilities of the supervised tokens of each sample: [B]."""
        logits, targets, keep = self.supervised_logits(input_ids, attention_mask, labels, media)
        token_lp = logits.log_softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sample_of_token = torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(keep)
        out = torch.zeros(input_ids.shape[0], device=input_ids.device, dtype=token_lp.dtype)
        return out.index_add_(0, sample_of_token[keep], token_lp)

    @torch.no_grad()
    def generate(self, input_ids: Tensor, media: Optional[dict[str, Payload]] = None, **generate_kwargs: Any) -> Tensor:
        """Generate new token ids (KV cache on) for a prompt that may contain placeholder slots."""
        embeds = self.embed(input_ids, media)
        attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=input_ids.device)
        return self.causal_lm.generate(inputs_embeds=embeds, attention_mask=attention_mask, **generate_kwargs)
