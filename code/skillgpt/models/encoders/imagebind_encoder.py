"""Frozen ImageBind video encoder: turns clip tensors into the visual tokens the LLM sees."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skillgpt.models.encoders.imagebind import ImageBindModel
from skillgpt.models.layout import TokenLayout

OUTPUT_MODES = ("pooled", "clip_embeddings", "clip_tokens")
VIDEO_STEM_INITS = ("independent", "difference")


class ImageBindVideoEncoder(nn.Module):
    """Frozen ImageBind vision branch with three output modes (see ``EncoderConfig.output``).

    ``forward(video [B, S * K, C, T, H, W], crops=K) -> [B, N, D]``: S clips of K spatial crops each,
    clip-major (clip 0 crop 0, clip 0 crop 1, ..., as ``load_video`` returns them), where
    - ``pooled``: N = 1, D = out_dim (L2-normalised head outputs averaged over all S x K rows, as
      ImageBind's own forward does);
    - ``clip_embeddings``: N = S, D = out_dim (L2-normalised head output per crop, averaged over the
      clip's K crops; with K = 1 the clip's embedding; their mean over clips is ``pooled``);
    - ``clip_tokens``: N = S * K * (keep_cls + g'^2), D = vision_width (trunk tokens of every crop, the
      g x g patch grid average-pooled to g' x g', g' = max(1, round(g / pool)), optionally through
      the head's LayerNorm; clips in time order, a clip's crops in crop order). Crops are not averaged:
      they see different parts of the frame, so the same patch position of two crops is a different
      place; pool (``encoder.pool``, a pool/resampler projector) to spend fewer tokens.
    """

    def __init__(self, cfg, with_audio: bool = False, on_meta: bool = False) -> None:
        super().__init__()
        if cfg.output not in OUTPUT_MODES:
            raise ValueError(f"encoder.output must be one of {OUTPUT_MODES}, got {cfg.output!r}")
        if int(cfg.pool) < 1:
            raise ValueError(f"encoder.pool must be >= 1, got {cfg.pool}")
        if cfg.init_video_stem not in VIDEO_STEM_INITS:
            raise ValueError(f"encoder.init_video_stem must be one of {VIDEO_STEM_INITS}, got {cfg.init_video_stem!r}")
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        self.output = cfg.output
        self.keep_cls = bool(cfg.keep_cls)
        self.pool = int(cfg.pool)
        self.normalize_tokens = bool(cfg.normalize_tokens)
        self.grid = cfg.image_size // cfg.patch_size
        self.pooled_grid = max(1, round(self.grid / self.pool))
        kwargs = dict(
            vision_width=cfg.vision_width,
            vision_layers=cfg.vision_layers,
            vision_heads=cfg.vision_heads,
            audio_width=cfg.audio_width,
            audio_layers=cfg.audio_layers,
            audio_heads=cfg.audio_heads,
            out_dim=cfg.out_dim,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            frames=cfg.frames,
            audio_mel_bins=cfg.audio_mel_bins,
            audio_target_len=cfg.audio_target_len,
            audio_kernel_size=cfg.audio_kernel_size,
            audio_stride=cfg.audio_stride,
            with_audio=with_audio,
        )
        # Build without allocating, then materialise once: either from the checkpoint or seeded init.
        with torch.device("meta"):
            model = ImageBindModel(**kwargs)
        if on_meta:  # architecture only (shape checks of the real presets without their weights)
            pass
        elif cfg.checkpoint:
            model.to_empty(device="cpu")
            model.load_checkpoint(cfg.checkpoint)
        else:
            model.to_empty(device="cpu")
            model.init_weights(torch.Generator(device="cpu").manual_seed(int(cfg.init_seed)))
            if cfg.init_video_stem == "difference":
                stem = model.modality_preprocessors["vision"].rgbt_stem.proj[1].weight  # [W, 3, T, p, p]
                with torch.no_grad():
                    stem[:, :, 1] = -stem[:, :, 0]
        self.model = model
        self.checkpoint = cfg.checkpoint
        self.out_dim = cfg.vision_width if self.output == "clip_tokens" else cfg.out_dim
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "ImageBindVideoEncoder":
        """The encoder is frozen: it always stays in eval mode."""
        return super().train(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.modality_preprocessors["vision"].cls_token.dtype

    @property
    def device(self) -> torch.device:
        return self.model.modality_preprocessors["vision"].cls_token.device

    def tokens_per_video(self, num_clips: int, frames_per_clip: int = 2, crops: int = 1) -> int:
        """Number of tokens N that ``forward`` yields for a video of ``num_clips`` clips of ``crops`` crops."""
        return self.layout(num_clips, frames_per_clip, crops).num_tokens

    def weight_files(self) -> list[str]:
        """Files whose content determines the weights (for feature-cache keys); [] = seeded init."""
        return [str(self.checkpoint)] if self.checkpoint else []

    def layout(self, num_clips: int, frames_per_clip: int = 2, crops: int = 1) -> TokenLayout:
        """Arrangement of the output tokens: one group in all for ``pooled``, one per clip for
        ``clip_embeddings`` (crops averaged), one per clip x crop for ``clip_tokens``.

        The video stem's temporal kernel consumes the frames of a clip, so ``frames_per_clip`` does not
        change the count."""
        if self.output == "pooled":
            return TokenLayout(groups=1, prefix=1, grid=0)
        if self.output == "clip_embeddings":
            return TokenLayout(groups=num_clips, prefix=1, grid=0)
        return TokenLayout(groups=num_clips * crops, prefix=int(self.keep_cls), grid=self.pooled_grid)

    def _clip_tokens(self, tokens: Tensor) -> Tensor:
        """Trunk tokens [N, 1 + g*g, W] -> [N, keep_cls + g'^2, W]."""
        n, _, width = tokens.shape
        cls, patches = tokens[:, :1], tokens[:, 1:]
        if self.pooled_grid != self.grid:
            grid = patches.transpose(1, 2).reshape(n, width, self.grid, self.grid)
            grid = F.adaptive_avg_pool2d(grid, self.pooled_grid)
            patches = grid.flatten(2).transpose(1, 2)
        out = torch.cat([cls, patches], dim=1) if self.keep_cls else patches
        if self.normalize_tokens:
            out = self.model.modality_heads["vision"][0](out)
        return out

    @torch.no_grad()
    def forward(self, video: Tensor, crops: int = 1) -> Tensor:
        """video [B, S * crops, C, T, H, W] clip-major (or [B, C, T, H, W] as one clip) -> [B, N, D]."""
        if video.ndim == 5:
            video = video.unsqueeze(1)
        if video.ndim != 6:
            raise ValueError(f"expected video [B, S, C, T, H, W], got {tuple(video.shape)}")
        b, rows = video.shape[:2]
        if crops < 1 or rows % crops:
            raise ValueError(f"video has {rows} clip rows, not num_clips x crops for crops={crops} "
                             "(expected data.video.num_crops rows per clip, clip-major)")
        clips = video.flatten(0, 1).to(device=self.device, dtype=self.dtype)
        tokens = self.model.vision_trunk_tokens(clips)
        if self.output == "clip_tokens":
            out = self._clip_tokens(tokens)
            return out.reshape(b, rows * out.shape[1], out.shape[2])
        emb = F.normalize(self.model.vision_head(tokens), dim=-1).reshape(b, rows, -1)
        if self.output == "pooled":  # ImageBind: the mean over every clip x crop row
            return emb.mean(dim=1, keepdim=True)
        return emb.reshape(b, rows // crops, crops, -1).mean(dim=2)
