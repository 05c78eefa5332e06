"""EVA-CLIP ViT-g (+ BLIP-2 Q-Former): the visual path of MiniGPT-4 and MiniGPT-v2, per frame.

Built on transformers' ``Blip2VisionModel`` / ``Blip2QFormerModel`` and loaded from the original LAVIS files
(``model.encoder.checkpoint``: ``eva_vit_g.pth``; ``model.encoder.qformer``: a BLIP-2 checkpoint; see
eva_clip_weights.py for the key layouts). What each frame gives, as in the originals' ``encode_img``:

* with a Q-Former (MiniGPT-4): ``ln_vision(vit(x))`` is cross-attended by the learned queries:
  ``num_query_token`` (32) tokens of the Q-Former width (768);
* without (MiniGPT-v2, ``model.encoder.merge_tokens: 4``): ``ln_vision(vit(x))`` without the class token,
  every ``merge_tokens`` consecutive patch tokens (row-major) concatenated: (grid^2 / 4) tokens of
  4 x 1408 = 5632. ``ln_vision`` is then a fresh LayerNorm (weight 1, bias 0), as the original's frozen
  one that no checkpoint holds.

The architecture comes from the files (widths, patch size, Q-Former layers and cross-attention
frequency) plus what they cannot tell: ``vision_layers`` (39 for ViT-g: blocks beyond it in the file are
unused, as in LAVIS), ``vision_heads`` (16), ``qformer_heads`` (12) and ``image_size`` (224; 448 for
MiniGPT-v2: the stored position grid is resized bicubically, as LAVIS ``interpolate_pos_embed``).
The tokens are not a patch grid (layout: ``prefix`` tokens per frame, ``grid`` 0), so only per-token
projectors (linear, mlp2x_gelu) fit them; ``keep_cls`` and ``pool`` do not apply (pool must be 1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel, Blip2VisionConfig, Blip2VisionModel

from skillgpt.models.encoders.eva_clip_weights import qformer_to_hf, vit_shape, vit_tensors, vit_to_hf
from skillgpt.models.encoders.pixels import (
    FrozenTokenEncoder, load_exact, pixel_affines, read_state, to_encoder_pixels,
)
from skillgpt.models.layout import TokenLayout

# BLIP-2's image processor (Blip2ImageEvalProcessor): OpenAI CLIP statistics.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
EVA_EPS = 1e-6  # eva_vit.py block norms
LN_VISION_EPS = 1e-5  # ln_vision: a plain nn.LayerNorm
BERT_EPS = 1e-12  # Q-Former (BERT) norms


class EvaClipEncoder(FrozenTokenEncoder):
    """``forward(video [B, S, C, T, H, W]) -> [B, S*T*n, D]``: n tokens per frame (see the module doc)."""

    name = "eva_clip"

    def __init__(self, cfg: Any, video: Any, on_meta: bool = False) -> None:
        super().__init__()
        self.require_tokens_output(cfg)
        if int(cfg.pool) != 1:
            raise ValueError(f"model.encoder.pool: eva_clip tokens are not a patch grid; expected 1, got {cfg.pool}")
        if not cfg.checkpoint:
            raise ValueError("model.encoder.checkpoint is not set: eva_clip loads the ViT from a local eva_vit_g.pth")
        self.files = [Path(cfg.checkpoint).expanduser()] + ([Path(cfg.qformer).expanduser()] if cfg.qformer else [])
        vit = vit_tensors(self.files[0], read_state(self.files[0]))
        blip2 = read_state(self.files[1]) if cfg.qformer else None
        if blip2 is not None and any(k.startswith("visual_encoder.") for k in blip2):
            vit = {**vit, **vit_tensors(self.files[1], blip2)}  # loaded after the ViT file, as the original
        shape = vit_shape(self.files[0], vit)
        vision_cfg, vision_state = self._vision(cfg, vit, shape)
        self.merge = int(cfg.merge_tokens)
        qformer_cfg, qformer_state = self._qformer(cfg, blip2, shape, vision_state)
        with torch.device("meta" if on_meta else "cpu"):
            self.vision = Blip2VisionModel(vision_cfg)
            self.vision.post_layernorm.eps = LN_VISION_EPS
            self.qformer = Blip2QFormerModel(qformer_cfg) if qformer_cfg is not None else None
            queries = torch.zeros(1, self.tokens_per_frame, self.out_dim)
            self.query_tokens = nn.Parameter(queries) if qformer_cfg is not None else None
        if not on_meta:
            self._load(self.files[0], self.vision, vision_state)
            if self.qformer is not None:
                self._load(self.files[1], self.qformer, qformer_state)
                self.query_tokens.data.copy_(blip2["query_tokens"].float().reshape(self.query_tokens.shape))
        self.data_affine, self.model_affine = pixel_affines(cfg, video, CLIP_MEAN, CLIP_STD)
        self.freeze()

    def _vision(self, cfg: Any, vit: dict[str, Tensor], shape: dict[str, int]) -> tuple[Blip2VisionConfig, dict]:
        """The ViT's config and transformers state dict (without ln_vision); sets image_size and grid."""
        layers, image_size = int(cfg.vision_layers), int(cfg.image_size)
        if not 1 <= layers <= shape["blocks"]:
            raise ValueError(f"model.encoder.vision_layers: {layers}, but {self.files[0]} has {shape['blocks']} blocks")
        if image_size % shape["patch"]:
            raise ValueError(f"model.encoder.image_size {image_size} is not a multiple of the patch size "
                             f"{shape['patch']}")
        self.image_size, self.grid = image_size, image_size // shape["patch"]
        config = Blip2VisionConfig(hidden_size=shape["width"], intermediate_size=shape["mlp"], num_hidden_layers=layers,
                                   num_attention_heads=int(cfg.vision_heads), image_size=image_size,
                                   patch_size=shape["patch"], qkv_bias=True, layer_norm_eps=EVA_EPS, hidden_act="gelu")
        return config, vit_to_hf(self.files[0], vit, layers, self.grid)

    def _qformer(self, cfg: Any, blip2: dict[str, Tensor] | None, shape: dict[str, int],
                 vision_state: dict[str, Tensor]) -> tuple[Blip2QFormerConfig | None, dict]:
        """The Q-Former's config and state dict (None, {} without one); puts ln_vision into `vision_state` and
        sets tokens_per_frame and out_dim."""
        width = shape["width"]
        if blip2 is None:  # MiniGPT-v2: a fresh ln_vision, merged patch tokens
            if self.merge < 1 or (self.grid * self.grid) % self.merge:
                raise ValueError(f"model.encoder.merge_tokens: {self.merge} does not divide the "
                                 f"{self.grid}x{self.grid} patch tokens")
            vision_state.update({"post_layernorm.weight": torch.ones(width), "post_layernorm.bias": torch.zeros(width)})
            self.tokens_per_frame, self.out_dim = self.grid * self.grid // self.merge, width * self.merge
            return None, {}
        if self.merge != 1:
            raise ValueError(f"model.encoder.merge_tokens: {self.merge} with a Q-Former (model.encoder.qformer); "
                             "expected 1 (MiniGPT-4 feeds the query tokens as they are)")
        state, qs = qformer_to_hf(self.files[1], blip2)
        if qs["encoder_width"] != width:
            raise ValueError(f"{self.files[1]}: the Q-Former cross-attends {qs['encoder_width']}-wide features, "
                             f"but the ViT {self.files[0]} is {width} wide")
        vision_state.update({"post_layernorm.weight": blip2["ln_vision.weight"].float(),
                             "post_layernorm.bias": blip2["ln_vision.bias"].float()})
        self.tokens_per_frame, self.out_dim = qs["queries"], qs["hidden"]
        config = Blip2QFormerConfig(hidden_size=qs["hidden"], num_hidden_layers=qs["layers"],
                                    num_attention_heads=int(cfg.qformer_heads), intermediate_size=qs["intermediate"],
                                    encoder_hidden_size=width, cross_attention_frequency=qs["cross_every"],
                                    layer_norm_eps=BERT_EPS, hidden_act="gelu")
        return config, state

    @staticmethod
    def _load(path: Path, module: nn.Module, state: dict[str, Tensor]) -> None:
        load_exact(path, module, state)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision.embeddings.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vision.embeddings.patch_embedding.weight.device

    def weight_files(self) -> list[str]:
        """The ViT file and, with a Q-Former, the BLIP-2 checkpoint."""
        return [str(p) for p in self.files]

    def layout(self, num_clips: int, frames_per_clip: int = 2, crops: int = 1) -> TokenLayout:
        """One group of ``tokens_per_frame`` non-spatial tokens per frame of every crop."""
        return TokenLayout(groups=num_clips * crops * frames_per_clip, prefix=self.tokens_per_frame, grid=0)

    def _prepare(self, frames: Tensor) -> Tensor:
        """Frames [N, C, H, W] in the data's normalisation -> CLIP-normalised pixels of image_size."""
        x = frames.to(device=self.device, dtype=torch.float32)
        return to_encoder_pixels(x, self.data_affine, self.model_affine, self.image_size).to(self.dtype)

    @torch.no_grad()
    def encode_frames(self, pixels: Tensor) -> Tensor:
        """CLIP-normalised frames [N, 3, S, S] -> tokens [N, tokens_per_frame, out_dim] (the originals' encode_img
        before llama_proj)."""
        embeds = self.vision(pixel_values=pixels).last_hidden_state  # ln_vision(vit(x))
        if self.qformer is None:
            patches = embeds[:, 1:]
            return patches.reshape(patches.shape[0], self.tokens_per_frame, self.out_dim)
        queries = self.query_tokens.expand(embeds.shape[0], -1, -1).to(embeds.dtype)
        mask = torch.ones(embeds.shape[:-1], dtype=torch.long, device=embeds.device)
        return self.qformer(query_embeds=queries, encoder_hidden_states=embeds,
                            encoder_attention_mask=mask).last_hidden_state

    @torch.no_grad()
    def forward(self, video: Tensor, crops: int = 1) -> Tensor:
        """video [B, S * crops, C, T, H, W] clip-major (or [B, C, T, H, W] as one clip) -> [B, N, D]."""
        video = self.video_batch(video, crops)
        b, s, c, t = video.shape[:4]
        frames = video.permute(0, 1, 3, 2, 4, 5).reshape(b * s * t, c, *video.shape[-2:])
        tokens = self.encode_frames(self._prepare(frames))
        return tokens.reshape(b, -1, self.out_dim)
