"""InternVideo2 vision encoder as VideoGPT+ runs it (the 1B stage-2 tower, ``InternVideo2-Stage2_1B-224p-f4``).

A ViT on 4-frame clips: a Conv3d patch stem (tubelet 1, 14 x 14 patches), a class token, a learned (sin-cos
initialised) space-time position table, pre-norm blocks with RMSNorm, query/key RMSNorm over the full width,
LayerScale and a GELU MLP. VideoGPT+ reads the tokens after block ``depth - 2`` (``x_vis_return_idx=-2``: the
last block of the file is not run) and drops the class token, so a clip of T frames gives T groups of
``grid x grid`` patch tokens (layout: groups per frame, prefix 0). A one-frame clip is encoded as an image
(``img_pos_embed``), as the original's ``use_image``.

Weights come from the original checkpoint (``model.encoder.checkpoint``: the ``.pt`` / ``.pth`` whose ``module``
or ``model`` entry holds ``vision_encoder.*`` tensors, a bare state dict, or ``.safetensors``); the widths, the
depth, the MLP size and the position table's frames are read from the tensors, the heads from
``model.encoder.vision_heads`` (16 for 1B). A table made for another frame count is resized along time
linearly, as ``interpolate_pos_embed_internvideo2_new``. Without a checkpoint: seeded random weights of
``vision_width`` / ``vision_layers`` (blocks run) / ``vision_heads`` (also the sizes of a meta build). Pixels: ``data.video.processor:
internvideo2`` (the loader's default for this encoder) is VideoGPT+'s own preprocessing; other pixel rules
are re-normalised to ImageNet statistics and resized (bilinear) to ``image_size``.
Checked against VideoGPT+'s code: tests/models/test_internvideo2.py (fixture tests/fixtures/internvideo2).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skillgpt.models.encoders.pixels import (
    FrozenTokenEncoder, load_exact, pixel_affines, read_state, to_encoder_pixels,
)
from skillgpt.models.layout import TokenLayout

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MLP_RATIO = 48 / 11  # the 1B tower's (1408 -> 6144)
# Tensors of the checkpoint this encoder does not use: the CLIP-distillation heads, the extra position tables,
# the contrastive projection and the text side.
UNUSED_PREFIXES = ("clip_", "final_clip_decoder", "vision_proj", "text_", "itm_head", "temp")


class RMSNorm(nn.Module):
    """InternVideo2's RMSNorm: statistics in float32, weight applied in the input's dtype."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-5))

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() * self.gamma.float()).to(x.dtype)  # force_fp32, as the original


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.encoder.vision_heads: {heads} does not divide the width {dim}")
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm, self.k_norm = RMSNorm(dim), RMSNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)  # over the full width, before the heads split
        q, k, v = (t.reshape(b, n, self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1, self.attn, self.ls1 = RMSNorm(dim), Attention(dim, heads, qkv_bias), LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = RMSNorm(dim), Mlp(dim, hidden), LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(3, dim, kernel_size=(1, patch, patch), stride=(1, patch, patch))


def sincos_table(dim: int, grid: int, frames: int) -> Tensor:
    """The 3D sin-cos position table the original initialises with: [1, 1 + frames * grid^2, dim], class row 0
    (3/4 of the channels for the 2D position, 1/4 for time)."""
    def one_d(channels: int, positions: np.ndarray) -> np.ndarray:
        omega = np.arange(channels // 2, dtype=np.float32) / np.float32(channels / 2.0)
        angles = np.einsum("m,d->md", positions.reshape(-1), 1.0 / 10000 ** omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    spatial_dim, temporal_dim = dim // 4 * 3, dim // 4
    gh, gw = np.meshgrid(np.arange(grid, dtype=np.float32), np.arange(grid, dtype=np.float32))
    spatial = np.concatenate([one_d(spatial_dim // 2, gh), one_d(spatial_dim // 2, gw)], axis=1)  # [g*g, 3/4 d]
    temporal = one_d(temporal_dim, np.arange(frames, dtype=np.float32))  # [T, d/4]
    table = np.concatenate([np.repeat(temporal[:, None], grid * grid, 1),
                            np.repeat(spatial[None], frames, 0)], axis=-1).reshape(frames * grid * grid, dim)
    return torch.from_numpy(np.concatenate([np.zeros((1, dim)), table])).float().unsqueeze(0)


def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """The vision tower's tensors of an InternVideo2 checkpoint, without the ``vision_encoder.`` prefix."""
    if not path.is_file():
        raise FileNotFoundError(f"model.encoder.checkpoint: {path} not found (an InternVideo2 .pt/.pth/.safetensors)")
    state = read_state(path, wrappers=("module", "model", "state_dict"))  # DeepSpeed stage-1 / plain training
    if any(k.startswith("vision_encoder.") for k in state):
        state = {k.removeprefix("vision_encoder."): v for k, v in state.items() if k.startswith("vision_encoder.")}
    if "patch_embed.proj.weight" not in state:
        raise ValueError(f"{path}: no InternVideo2 vision tower (no [vision_encoder.]patch_embed.proj.weight)")
    return state


def resize_time(table: Tensor, grid: int, frames: int) -> Tensor:
    """A [1, 1 + T*g*g, D] position table made for T frames -> for ``frames`` (linear along time, class row kept)."""
    dim, old = table.shape[-1], (table.shape[1] - 1) // (grid * grid)
    if old == frames:
        return table
    pos = table[:, 1:].reshape(1, old, grid * grid, dim).permute(0, 2, 3, 1).reshape(-1, dim, old)
    pos = F.interpolate(pos.float(), size=frames, mode="linear").to(table.dtype)
    pos = pos.reshape(1, grid * grid, dim, frames).permute(0, 3, 1, 2).reshape(1, -1, dim)
    return torch.cat([table[:, :1], pos], dim=1)


class InternVideo2Encoder(FrozenTokenEncoder):
    """``forward(video [B, S, C, T, H, W]) -> [B, S*T*g'^2, D]``: patch tokens per frame, no class token."""

    name = "internvideo2"

    def __init__(self, cfg: Any, video: Any, on_meta: bool = False) -> None:
        super().__init__()
        self.require_tokens_output(cfg)
        if cfg.keep_cls:
            raise ValueError("model.encoder.keep_cls: internvideo2 has one class token per clip, not per frame; "
                             "set it to false (VideoGPT+ drops it)")
        self.frames, self.pool = int(video.frames_per_clip), int(cfg.pool)
        if self.pool < 1:
            raise ValueError(f"model.encoder.pool must be >= 1, got {cfg.pool}")
        self.file = Path(cfg.checkpoint).expanduser() if cfg.checkpoint else None
        # on the meta device (architecture only) the sizes are the config's and no file is read
        state = read_checkpoint(self.file) if self.file is not None and not on_meta else None
        shape = self._shape(cfg, state)
        self.dim, self.patch, self.image_size = shape["dim"], shape["patch"], int(cfg.image_size)
        if self.image_size % self.patch:
            raise ValueError(f"model.encoder.image_size {self.image_size} is not a multiple of the patch {self.patch}")
        self.grid = self.image_size // self.patch
        self.pooled_grid = max(1, round(self.grid / self.pool))
        with torch.device("meta" if on_meta else "cpu"):
            self.patch_embed = PatchEmbed(self.dim, self.patch)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, self.dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.frames * self.grid ** 2, self.dim))
            self.img_pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, self.dim))
            self.blocks = nn.ModuleList(Block(self.dim, int(cfg.vision_heads), shape["hidden"], shape["qkv_bias"])
                                        for _ in range(shape["run"]))
        if not on_meta:
            self._init_or_load(cfg, state, shape)
        self.data_affine, self.model_affine = pixel_affines(cfg, video, IMAGENET_MEAN, IMAGENET_STD)
        self.out_dim = self.dim
        self.freeze()

    def _shape(self, cfg: Any, state: dict[str, Tensor] | None) -> dict[str, Any]:
        """Width, patch, MLP size, blocks run (all but the file's last) and qkv bias: from the file, else cfg."""
        if state is None:
            dim = int(cfg.vision_width)
            return {"dim": dim, "patch": int(cfg.patch_size), "hidden": int(dim * MLP_RATIO),
                    "run": int(cfg.vision_layers), "qkv_bias": False}
        depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        if depth < 2:
            raise ValueError(f"{self.file}: {depth} block(s); VideoGPT+ reads block depth-2, so at least 2 are needed")
        stem = state["patch_embed.proj.weight"]
        if stem.ndim != 5 or stem.shape[2] != 1:
            raise ValueError(f"{self.file}: patch_embed.proj.weight {tuple(stem.shape)}: expected a tubelet-1 Conv3d")
        return {"dim": stem.shape[0], "patch": stem.shape[-1], "hidden": state["blocks.0.mlp.fc1.weight"].shape[0],
                "run": depth - 1, "qkv_bias": "blocks.0.attn.qkv.bias" in state}

    def _init_or_load(self, cfg: Any, state: dict[str, Tensor] | None, shape: dict[str, Any]) -> None:
        if state is None:  # seeded random weights (the original's init: truncated normal 0.02, sin-cos positions)
            generator = torch.Generator().manual_seed(int(cfg.init_seed))
            for name, p in self.named_parameters():  # every tensor from the seed: rebuilds are identical
                if name.endswith("weight") and p.ndim > 1 or name == "cls_token":
                    p.data.copy_(torch.randn(p.shape, generator=generator).clamp_(-2, 2) * 0.02)
                elif name.endswith("bias"):
                    p.data.zero_()
            self.pos_embed.data.copy_(sincos_table(self.dim, self.grid, self.frames))
            self.img_pos_embed.data.copy_(sincos_table(self.dim, self.grid, 1))
            return
        table = state["pos_embed"]
        if (table.shape[1] - 1) % (self.grid ** 2):
            raise ValueError(f"{self.file}: pos_embed {tuple(table.shape)} is not frames x {self.grid}^2 (+1): the "
                             f"file was made for another image size than model.encoder.image_size {self.image_size}")
        wanted = {k: v for k, v in state.items() if k.split(".")[0] in ("patch_embed", "cls_token", "pos_embed")
                  or (k.startswith("blocks.") and int(k.split(".")[1]) < shape["run"])}
        wanted["pos_embed"] = resize_time(table, self.grid, self.frames)
        if "img_pos_embed" in state:  # sep_image_video_pos_embed; else the time-averaged video table
            wanted["img_pos_embed"] = state["img_pos_embed"]
        else:
            video = wanted["pos_embed"]
            wanted["img_pos_embed"] = torch.cat([video[:, :1], video[:, 1:].reshape(
                1, self.frames, self.grid ** 2, self.dim).mean(1)], dim=1)
        load_exact(self.file, self, {k: v.float() for k, v in wanted.items()})

    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embed.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embed.proj.weight.device

    def weight_files(self) -> list[str]:
        return [str(self.file)] if self.file is not None else []

    def layout(self, num_clips: int, frames_per_clip: int = 4, crops: int = 1) -> TokenLayout:
        """One pooled patch grid per frame of every clip and crop."""
        return TokenLayout(groups=num_clips * crops * frames_per_clip, prefix=0, grid=self.pooled_grid)

    def _prepare(self, clips: Tensor) -> Tensor:
        """Clips [N, C, T, H, W] in the data's normalisation -> ImageNet-normalised pixels of image_size."""
        x = clips.to(device=self.device, dtype=torch.float32)
        n, c, t = x.shape[:3]
        frames = to_encoder_pixels(x.transpose(1, 2).reshape(n * t, c, *x.shape[-2:]), self.data_affine,
                                   self.model_affine, self.image_size)
        return frames.reshape(n, t, c, self.image_size, self.image_size).transpose(1, 2).to(self.dtype)

    @torch.no_grad()
    def encode_clips(self, clips: Tensor) -> Tensor:
        """ImageNet-normalised clips [N, 3, T, S, S] -> tokens after block depth-2 [N, 1 + T*g*g, D], class first
        (the original's ``InternVideo2_Stage2V.forward``)."""
        n, _, t = clips.shape[:3]
        if t not in (1, self.frames):
            raise ValueError(f"internvideo2: clips of {t} frames, but its position table is for {self.frames} "
                             "(data.video.frames_per_clip) or 1 (an image)")
        x = self.patch_embed.proj(clips.to(self.dtype)).flatten(3).permute(0, 2, 3, 1).reshape(n, -1, self.dim)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = x + (self.img_pos_embed if t == 1 else self.pos_embed)
        for block in self.blocks:
            x = block(x)
        return x

    @torch.no_grad()
    def forward(self, video: Tensor, crops: int = 1) -> Tensor:
        """video [B, S * crops, C, T, H, W] clip-major (or [B, C, T, H, W] as one clip) -> [B, N, D]."""
        video = self.video_batch(video, crops)
        b, s, c, t = video.shape[:4]
        tokens = self.encode_clips(self._prepare(video.reshape(b * s, c, t, *video.shape[-2:])))[:, 1:]
        tokens = tokens.reshape(b * s * t, self.grid * self.grid, self.dim)
        if self.pooled_grid != self.grid:
            grid = tokens.transpose(1, 2).reshape(-1, self.dim, self.grid, self.grid)
            tokens = F.adaptive_avg_pool2d(grid, self.pooled_grid).flatten(2).transpose(1, 2)
        return tokens.reshape(b, -1, self.dim)
