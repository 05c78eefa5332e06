"""Native, checkpoint-compatible ImageBind vision and audio branches.

Parameter names follow the public ``imagebind_huge.pth`` checkpoint exactly
(``modality_preprocessors.*``, ``modality_trunks.*``, ``modality_heads.*``,
``modality_postprocessors.*``) so the real weights load with ``strict=True``
once the other modalities' keys are dropped (see :func:`skillgpt.models.encoders.imagebind_weights.load_imagebind_state`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from skillgpt.models.encoders.imagebind_weights import (  # noqa: F401 (re-exported: the old import path)
    MODALITIES, load_imagebind_state, load_state_strict,
)

LN_EPS = 1e-6
AUDIO_LOGIT_SCALE = 20.0


# --------------------------------------------------------------------------- stems
class PadIm2Video(nn.Module):
    """Turns images [N, C, H, W] into clips by repeating a single frame ``ntimes`` times."""

    def __init__(self, ntimes: int) -> None:
        super().__init__()
        self.ntimes = ntimes

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            x = x.unsqueeze(2)
        if x.ndim != 5:
            raise ValueError(f"expected [N, C, H, W] or [N, C, T, H, W], got {tuple(x.shape)}")
        if x.shape[2] == 1:
            x = x.repeat(1, 1, self.ntimes, 1, 1)
        return x


class PatchStem(nn.Module):
    """Convolutional patchifier: ``proj`` then flatten to tokens, optional LayerNorm."""

    def __init__(self, proj: nn.Module, norm_layer: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.proj = proj
        self.norm_layer = norm_layer

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class PosEmbedding(nn.Module):
    """Holder of the learnable position embedding [1, 1 + num_patches, width]."""

    def __init__(self, num_tokens: int, width: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, width))


class TokenPreprocessor(nn.Module):
    """Stem -> prepend one class token -> add position embedding."""

    def __init__(self, stem: PatchStem, num_patches: int, width: int) -> None:
        super().__init__()
        self.rgbt_stem = stem
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embedding_helper = PosEmbedding(1 + num_patches, width)

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.rgbt_stem(x)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        pos = self.pos_embedding_helper.pos_embed
        if pos.shape[1] != tokens.shape[1]:
            raise ValueError(
                f"input gives {tokens.shape[1]} tokens but the position embedding has {pos.shape[1]}; "
                "check image_size/patch_size/frames (or audio mel bins/target length)"
            )
        return tokens + pos


# --------------------------------------------------------------------------- trunk
class FusedMultiheadAttention(nn.Module):
    """Sequence-first multi-head self-attention named like ``nn.MultiheadAttention``.

    Holds a fused ``in_proj_weight``/``in_proj_bias``, an ``out_proj`` Linear and, when
    ``add_bias_kv``, learned ``bias_k``/``bias_v`` appended to the key/value sequence.
    """

    def __init__(self, width: int, heads: int, add_bias_kv: bool = False) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.width, self.heads = width, heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        if add_bias_kv:
            self.bias_k = nn.Parameter(torch.zeros(1, 1, width))
            self.bias_v = nn.Parameter(torch.zeros(1, 1, width))
        else:
            self.bias_k = self.bias_v = None
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        """x: [L, B, D] -> [L, B, D]."""
        length, batch, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(1, batch, width)], dim=0)
            v = torch.cat([v, self.bias_v.expand(1, batch, width)], dim=0)
        hd = width // self.heads

        def split(t: Tensor) -> Tensor:  # [L', B, D] -> [B, H, L', hd]
            return t.reshape(t.shape[0], batch, self.heads, hd).permute(1, 2, 0, 3)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        out = out.permute(2, 0, 1, 3).reshape(length, batch, width)
        return self.out_proj(out)


class Mlp(nn.Module):
    """fc1 -> GELU -> fc2."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (drop path is an identity in eval mode and omitted)."""

    def __init__(self, width: int, heads: int, add_bias_kv: bool, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.attn = FusedMultiheadAttention(width, heads, add_bias_kv)
        self.norm_1 = nn.LayerNorm(width, eps=LN_EPS)
        self.mlp = Mlp(width, width * mlp_ratio)
        self.norm_2 = nn.LayerNorm(width, eps=LN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp(self.norm_2(x))


class Trunk(nn.Module):
    """Batch-first tokens in and out; blocks run sequence-first like the reference."""

    def __init__(self, width: int, layers: int, heads: int, pre_ln: bool, add_bias_kv: bool) -> None:
        super().__init__()
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(width, eps=LN_EPS) if pre_ln else nn.Identity())
        self.blocks = nn.ModuleList(Block(width, heads, add_bias_kv) for _ in range(layers))

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.pre_transformer_layer(tokens).transpose(0, 1)
        for blk in self.blocks:
            x = blk(x)
        return x.transpose(0, 1)


# --------------------------------------------------------------------------- heads / post
class SelectToken(nn.Module):
    """Takes token ``index`` of [N, L, D]."""

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.index]


class Normalize(nn.Module):
    """L2 normalisation over the last dimension."""

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1, p=2)


class FixedLogitScale(nn.Module):
    """Multiplies by ``exp(log_logit_scale)`` (a buffer, clipped at 100)."""

    def __init__(self, scale: float, max_scale: float = 100.0) -> None:
        super().__init__()
        self.max_scale = max_scale
        self.register_buffer("log_logit_scale", torch.ones([]) * math.log(scale))

    def forward(self, x: Tensor) -> Tensor:
        return torch.clip(self.log_logit_scale.exp(), max=self.max_scale) * x


def _head(width: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(width, eps=LN_EPS), SelectToken(0), nn.Linear(width, out_dim, bias=False))


# --------------------------------------------------------------------------- model
class ImageBindModel(nn.Module):
    """ImageBind vision (+ optional audio) branches with checkpoint-compatible names."""

    def __init__(
        self,
        vision_width: int = 1280,
        vision_layers: int = 32,
        vision_heads: int = 16,
        audio_width: int = 768,
        audio_layers: int = 12,
        audio_heads: int = 12,
        out_dim: int = 1024,
        image_size: int = 224,
        patch_size: int = 14,
        frames: int = 2,
        audio_mel_bins: int = 128,
        audio_target_len: int = 204,
        audio_kernel_size: int = 16,
        audio_stride: int = 10,
        with_audio: bool = True,
    ) -> None:
        super().__init__()
        self.vision_width, self.audio_width, self.out_dim = vision_width, audio_width, out_dim
        self.image_size, self.patch_size, self.frames = image_size, patch_size, frames
        self.grid = image_size // patch_size
        self.with_audio = with_audio
        kernel = (frames, patch_size, patch_size)
        vision_stem = PatchStem(
            nn.Sequential(PadIm2Video(frames), nn.Conv3d(3, vision_width, kernel, stride=kernel, bias=False))
        )
        pre = {"vision": TokenPreprocessor(vision_stem, self.grid * self.grid, vision_width)}
        trunks = {"vision": Trunk(vision_width, vision_layers, vision_heads, pre_ln=True, add_bias_kv=False)}
        heads = {"vision": _head(vision_width, out_dim)}
        post: dict[str, nn.Module] = {"vision": Normalize()}
        if with_audio:
            self.audio_mel_bins, self.audio_target_len = audio_mel_bins, audio_target_len
            conv = nn.Conv2d(1, audio_width, audio_kernel_size, stride=audio_stride, bias=False)
            audio_stem = PatchStem(conv, nn.LayerNorm(audio_width))  # default eps, as the reference
            gh = (audio_mel_bins - audio_kernel_size) // audio_stride + 1
            gw = (audio_target_len - audio_kernel_size) // audio_stride + 1
            pre["audio"] = TokenPreprocessor(audio_stem, gh * gw, audio_width)
            trunks["audio"] = Trunk(audio_width, audio_layers, audio_heads, pre_ln=False, add_bias_kv=True)
            heads["audio"] = _head(audio_width, out_dim)
            post["audio"] = nn.Sequential(Normalize(), FixedLogitScale(AUDIO_LOGIT_SCALE))
        self.modality_preprocessors = nn.ModuleDict(pre)
        self.modality_trunks = nn.ModuleDict(trunks)
        self.modality_heads = nn.ModuleDict(heads)
        self.modality_postprocessors = nn.ModuleDict(post)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.modality_trunks.keys())

    # ---- initialisation -------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, generator: Optional[torch.Generator] = None) -> None:
        """Deterministic random init: normal(0, 0.02) clipped at 2 std, zero biases, LayerNorm 1/0.

        Uses a CPU ``generator`` so the weights are identical on every machine (clipping is far
        cheaper than ``trunc_normal_`` for the 630M-parameter huge trunk).
        """

        def tn(p: Tensor) -> None:
            p.normal_(0.0, 0.02, generator=generator).clamp_(-0.04, 0.04)

        # modality by modality, so enabling audio does not change the vision weights of a seed
        groups = (self.modality_preprocessors, self.modality_trunks, self.modality_heads, self.modality_postprocessors)
        for mod in (m for name in self.modalities for g in groups for m in g[name].modules()):
            if isinstance(mod, nn.LayerNorm):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
            elif isinstance(mod, (nn.Linear, nn.Conv2d, nn.Conv3d)):
                tn(mod.weight)
                if mod.bias is not None:
                    mod.bias.zero_()
            elif isinstance(mod, FusedMultiheadAttention):
                tn(mod.in_proj_weight)
                mod.in_proj_bias.zero_()
                if mod.bias_k is not None:
                    tn(mod.bias_k)
                    tn(mod.bias_v)
            elif isinstance(mod, TokenPreprocessor):
                tn(mod.cls_token)
                tn(mod.pos_embedding_helper.pos_embed)
            elif isinstance(mod, FixedLogitScale):
                mod.log_logit_scale.fill_(math.log(AUDIO_LOGIT_SCALE))

    # ---- vision ----------------------------------------------------------------
    def vision_trunk_tokens(self, x: Tensor) -> Tensor:
        """Images [N, C, H, W] or clips [N, C, T, H, W] -> trunk tokens [N, 1 + g*g, width]."""
        tokens = self.modality_preprocessors["vision"](x)
        return self.modality_trunks["vision"](tokens)

    def vision_head(self, tokens: Tensor) -> Tensor:
        """Trunk tokens [N, L, width] -> head output [N, out_dim] (not normalised)."""
        return self.modality_heads["vision"](tokens)

    def embed_image(self, image: Tensor) -> Tensor:
        """Images [N, C, H, W] -> L2-normalised embeddings [N, out_dim]."""
        out = self.vision_head(self.vision_trunk_tokens(image))
        return self.modality_postprocessors["vision"](out)

    def embed_video(self, video: Tensor) -> Tensor:
        """Video [B, S, C, T, H, W] -> per-clip normalised embeddings averaged over clips [B, out_dim]."""
        if video.ndim != 6:
            raise ValueError(f"expected video [B, S, C, T, H, W], got {tuple(video.shape)}")
        b, s = video.shape[:2]
        emb = self.embed_image(video.flatten(0, 1))
        return emb.reshape(b, s, -1).mean(dim=1)

    # ---- audio -----------------------------------------------------------------
    def _need_audio(self) -> None:
        if not self.with_audio:
            raise RuntimeError("this ImageBindModel was built with with_audio=False")

    def audio_trunk_tokens(self, x: Tensor) -> Tensor:
        """Log-mel [N, 1, mel_bins, target_len] -> trunk tokens [N, 1 + gh*gw, audio_width]."""
        self._need_audio()
        return self.modality_trunks["audio"](self.modality_preprocessors["audio"](x))

    def audio_head(self, tokens: Tensor) -> Tensor:
        """Audio trunk tokens -> head output [N, out_dim] (not normalised)."""
        self._need_audio()
        return self.modality_heads["audio"](tokens)

    def embed_audio(self, audio: Tensor) -> Tensor:
        """Audio [B, S, 1, mel, len] (clips averaged) or [N, 1, mel, len] -> normalised * 20."""
        self._need_audio()
        clips = audio.ndim >= 5
        flat = audio.flatten(0, 1) if clips else audio
        out = self.modality_postprocessors["audio"](self.audio_head(self.audio_trunk_tokens(flat)))
        return out.reshape(audio.shape[0], audio.shape[1], -1).mean(dim=1) if clips else out

    # ---- checkpoints -----------------------------------------------------------
    def load_checkpoint(self, path: Union[str, Path]) -> None:
        """Loads an ImageBind checkpoint (strict) for the branches this model has."""
        state = load_imagebind_state(path, modalities=self.modalities)
        load_state_strict(self, state, source=str(path))
