"""Frozen ImageBind audio encoder: log-mel clips -> the audio tokens the LLM sees."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skillgpt.models.encoders.imagebind import ImageBindModel
from skillgpt.models.layout import TokenLayout

OUTPUT_MODES = ("pooled", "clip_embeddings", "clip_tokens")


class ImageBindAudioEncoder(nn.Module):
    """Frozen ImageBind audio branch with the video wrapper's output modes (``EncoderConfig.output``).

    Wraps an existing ``ImageBindModel`` built with ``with_audio=True`` -- typically the one the video
    encoder already holds (``ImageBindAudioEncoder(video_encoder.model, cfg)``), so the checkpoint is
    loaded and kept in memory once. The model is then a submodule of both wrappers: ``parameters()``
    lists each tensor once, ``state_dict()`` holds it under both prefixes. Only the output options of
    ``cfg`` are read (``output``, ``keep_cls``, ``normalize_tokens``; ``pool`` does not apply).

    ``forward(audio [B, S, 1, mel, T]) -> [B, N, D]`` where
    - ``pooled``: N = 1, D = out_dim (per-clip normalised embeddings averaged over clips);
    - ``clip_embeddings``: N = S, D = out_dim (L2-normalised head output per clip);
    - ``clip_tokens``: N = S * (keep_cls + gh * gw), D = audio_width (trunk tokens per clip, optionally
      through the audio head's LayerNorm; clips concatenated in time order).
    ``logit_scale=True`` multiplies the embeddings by the checkpoint's audio logit scale (20), as
    ImageBind's own audio output (and PandaGPT's audio input) is scaled; ``pooled`` then equals
    ``ImageBindModel.embed_audio``.
    """

    def __init__(self, model: ImageBindModel, cfg, logit_scale: bool = False) -> None:
        super().__init__()
        if not getattr(model, "with_audio", False) or "audio" not in model.modality_trunks:
            raise ValueError("ImageBindAudioEncoder needs an ImageBindModel built with with_audio=True")
        if cfg.output not in OUTPUT_MODES:
            raise ValueError(f"audio encoder output must be one of {OUTPUT_MODES}, got {cfg.output!r}")
        self.model = model
        self.output = cfg.output
        self.keep_cls = bool(cfg.keep_cls)
        self.normalize_tokens = bool(cfg.normalize_tokens)
        self.logit_scale = bool(logit_scale)
        self.checkpoint = cfg.checkpoint
        stem = model.modality_preprocessors["audio"]
        self.num_patches = stem.pos_embedding_helper.pos_embed.shape[1] - 1  # gh * gw
        self.out_dim = model.audio_width if self.output == "clip_tokens" else model.out_dim
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "ImageBindAudioEncoder":
        """The encoder is frozen: it always stays in eval mode."""
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.modality_preprocessors["audio"].cls_token.dtype

    @property
    def device(self) -> torch.device:
        return self.model.modality_preprocessors["audio"].cls_token.device

    def weight_files(self) -> list[str]:
        """Files whose content determines the weights (for feature-cache keys); [] = seeded init."""
        return [str(self.checkpoint)] if self.checkpoint else []

    def layout(self, num_clips: int) -> TokenLayout:
        """Arrangement of the output tokens: one group per clip (one group in all for ``pooled``).

        The audio patch grid (mel x time) is not square, so a clip's tokens are all ``prefix`` (grid 0).
        """
        if self.output == "pooled":
            return TokenLayout(groups=1, prefix=1, grid=0)
        if self.output == "clip_embeddings":
            return TokenLayout(groups=num_clips, prefix=1, grid=0)
        return TokenLayout(groups=num_clips, prefix=int(self.keep_cls) + self.num_patches, grid=0)

    def tokens_per_audio(self, num_clips: int) -> int:
        """Number of tokens N that ``forward`` yields for an audio track of ``num_clips`` clips."""
        return self.layout(num_clips).num_tokens

    @torch.no_grad()
    def forward(self, audio: Tensor) -> Tensor:
        """audio [B, S, 1, mel, T] (or [B, 1, mel, T] as one clip) -> [B, N, D]."""
        if audio.ndim == 4:
            audio = audio.unsqueeze(1)
        if audio.ndim != 5:
            raise ValueError(f"expected audio [B, S, 1, mel, T], got {tuple(audio.shape)}")
        b, s = audio.shape[:2]
        tokens = self.model.audio_trunk_tokens(audio.flatten(0, 1).to(device=self.device, dtype=self.dtype))
        if self.output == "clip_tokens":
            out = tokens if self.keep_cls else tokens[:, 1:]
            if self.normalize_tokens:
                out = self.model.modality_heads["audio"][0](out)
            return out.reshape(b, s * out.shape[1], out.shape[2])
        emb = F.normalize(self.model.audio_head(tokens), dim=-1)
        if self.logit_scale:
            emb = self.model.modality_postprocessors["audio"][1](emb)
        emb = emb.reshape(b, s, -1)
        return emb.mean(dim=1, keepdim=True) if self.output == "pooled" else emb
