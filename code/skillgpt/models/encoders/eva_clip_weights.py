"""LAVIS' EVA-CLIP ViT-g and BLIP-2 Q-Former checkpoints read onto transformers' BLIP-2 modules.

Layouts (public LAVIS / MiniGPT-4 source):

* ``eva_vit_g.pth``: the state dict of LAVIS' ``eva_vit.VisionTransformer`` (``cls_token``, ``pos_embed``,
  ``patch_embed.proj.*``, ``blocks.N.{norm1,norm2,attn.{qkv.weight,q_bias,v_bias,proj.*},mlp.fc{1,2}.*}``).
  A ``visual_encoder.`` prefix (a whole BLIP-2 / MiniGPT state dict) is accepted too.
* a BLIP-2 checkpoint (``blip2_pretrained*.pth``: ``{"model": state_dict}``): ``Qformer.bert.*``,
  ``query_tokens``, ``ln_vision.*`` are used, as MiniGPT-4's ``load_state_dict(strict=False)`` uses them;
  the text-side parts MiniGPT-4 deletes (word/position embeddings, the text FFN ``intermediate``/``output``,
  the ``cls`` head) and other heads (``t5_proj``, ``vision_proj`` ...) are not. ``visual_encoder.*`` in it
  replace the ViT file's tensors, as in the original (it loads the Q-Former file after the ViT).

Files are read with ``torch.load(weights_only=True)`` (no pickled code runs) or as safetensors.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

VIT_PREFIX = "visual_encoder."
QFORMER_PREFIX = "Qformer.bert."
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_VIT_BLOCK_KEYS = ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "attn.qkv.weight", "attn.q_bias",
                   "attn.v_bias", "attn.proj.weight", "attn.proj.bias", "mlp.fc1.weight", "mlp.fc1.bias",
                   "mlp.fc2.weight", "mlp.fc2.bias")
_VIT_TOP_KEYS = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias")
# eva_vit.py modules the original never builds (use_mean_pooling=False, no head): present in some files,
# ignored by its load_state_dict(strict=False) as here.
_VIT_UNUSED = ("norm.", "fc_norm.", "head.", "mask_token", "rel_pos_bias.")
# block parts of eva_vit.py that LAVIS' settings do not build (no relative position bias, no layer scale)
_VIT_BLOCK_UNUSED = ("attn.relative_position_bias_table", "attn.relative_position_index", "gamma_1", "gamma_2")
_QF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")
_QF_USED = ("attention.", "crossattention.", "intermediate_query.", "output_query.")


def _named(path: Path, missing: list[str]) -> None:
    if missing:
        more = f" (+{len(missing) - 8} more)" if len(missing) > 8 else ""
        raise ValueError(f"{path}: missing keys {missing[:8]}{more}")


def vit_tensors(path: Path, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The LAVIS ViT tensors of `state` (``visual_encoder.`` prefix stripped); unknown keys are named."""
    if any(k.startswith(VIT_PREFIX) for k in state):
        state = {k[len(VIT_PREFIX):]: v for k, v in state.items() if k.startswith(VIT_PREFIX)}
    unknown = sorted(k for k in state if not (k in _VIT_TOP_KEYS or k.startswith(_VIT_UNUSED) or (
        (m := _BLOCK.match(k)) and m.group(2) in _VIT_BLOCK_KEYS + _VIT_BLOCK_UNUSED)))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown[:8]} (expected LAVIS eva_vit.py keys: cls_token, pos_embed, "
                         "patch_embed.proj.*, blocks.N.*)")
    return dict(state)


def vit_shape(path: Path, vit: Mapping[str, Tensor]) -> dict[str, int]:
    """Width, MLP width, patch size, stored grid and number of blocks of a LAVIS ViT state dict."""
    _named(path, [k for k in (*_VIT_TOP_KEYS, "blocks.0.mlp.fc1.weight") if k not in vit])
    blocks = 1 + max(int(m.group(1)) for k in vit if (m := _BLOCK.match(k)))
    width, patch = vit["cls_token"].shape[-1], vit["patch_embed.proj.weight"].shape[-1]
    grid = round((vit["pos_embed"].shape[-2] - 1) ** 0.5)
    return {"width": int(width), "mlp": int(vit["blocks.0.mlp.fc1.weight"].shape[0]), "patch": int(patch),
            "grid": grid, "blocks": blocks}


def interpolate_pos_embed(pos_embed: Tensor, grid: int) -> Tensor:
    """LAVIS ``interpolate_pos_embed``: the class token kept, the patch grid resized bicubically (float32)."""
    pos = pos_embed.float()
    old = round((pos.shape[-2] - 1) ** 0.5)
    if old == grid:
        return pos
    extra, tokens = pos[:, :1], pos[:, 1:]
    tokens = tokens.reshape(-1, old, old, pos.shape[-1]).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat((extra, tokens.permute(0, 2, 3, 1).flatten(1, 2)), dim=1)


def vit_to_hf(path: Path, vit: Mapping[str, Tensor], layers: int, grid: int) -> dict[str, Tensor]:
    """LAVIS ViT tensors -> ``Blip2VisionModel`` state dict (first `layers` blocks; no post_layernorm)."""
    _named(path, [f"blocks.{i}.{k}" for i in range(layers) for k in _VIT_BLOCK_KEYS if f"blocks.{i}.{k}" not in vit])
    out = {"embeddings.class_embedding": vit["cls_token"],
           "embeddings.position_embedding": interpolate_pos_embed(vit["pos_embed"], grid),
           "embeddings.patch_embedding.weight": vit["patch_embed.proj.weight"],
           "embeddings.patch_embedding.bias": vit["patch_embed.proj.bias"]}
    for i in range(layers):
        src, dst = f"blocks.{i}.", f"encoder.layers.{i}."
        q_bias, v_bias = vit[src + "attn.q_bias"], vit[src + "attn.v_bias"]
        out[dst + "self_attn.qkv.bias"] = torch.cat((q_bias, torch.zeros_like(v_bias), v_bias))
        for a, b in (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("attn.proj", "self_attn.projection"),
                     ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            out[dst + b + ".weight"] = vit[f"{src}{a}.weight"]
            out[dst + b + ".bias"] = vit[f"{src}{a}.bias"]
        out[dst + "self_attn.qkv.weight"] = vit[src + "attn.qkv.weight"]
    return {k: v.float() for k, v in out.items()}


def qformer_to_hf(path: Path, state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, int]]:
    """BLIP-2 checkpoint -> (``Blip2QFormerModel`` state dict, its shape: hidden, intermediate, layers,
    cross_every, queries, encoder_width)."""
    _named(path, [k for k in ("query_tokens", "ln_vision.weight", "ln_vision.bias",
                              QFORMER_PREFIX + "embeddings.LayerNorm.weight") if k not in state])
    bert = {k[len(QFORMER_PREFIX):]: v for k, v in state.items() if k.startswith(QFORMER_PREFIX)}
    out = {"layernorm.weight": bert["embeddings.LayerNorm.weight"], "layernorm.bias": bert["embeddings.LayerNorm.bias"]}
    cross = set()
    for key, value in bert.items():
        m = _QF_LAYER.match(key)
        if not m or not m.group(2).startswith(_QF_USED):
            continue  # text-side parts MiniGPT-4 deletes (embeddings, intermediate/output, cls)
        rest = m.group(2).replace("attention.self.", "attention.attention.")
        if rest.startswith("crossattention."):
            cross.add(int(m.group(1)))
        out[f"encoder.layer.{m.group(1)}.{rest}"] = value
    layers = 1 + max((int(m.group(1)) for k in bert if (m := _QF_LAYER.match(k))), default=-1)
    if layers < 1:
        raise ValueError(f"{path}: no Q-Former layers ({QFORMER_PREFIX}encoder.layer.N.*)")
    every = min((i for i in cross if i > 0), default=layers)
    if 0 not in cross or cross != set(range(0, layers, every)):
        raise ValueError(f"{path}: cross-attention in Q-Former layers {sorted(cross)}; expected every k-th layer "
                         "from layer 0 (BLIP-2: cross_attention_freq 2)")
    shape = {"hidden": int(state["query_tokens"].shape[-1]), "queries": int(state["query_tokens"].shape[-2]),
             "intermediate": int(out["encoder.layer.0.intermediate_query.dense.weight"].shape[0]) if
             "encoder.layer.0.intermediate_query.dense.weight" in out else 0,
             "layers": layers, "cross_every": every,
             "encoder_width": int(out["encoder.layer.0.crossattention.attention.key.weight"].shape[1])}
    return {k: v.float() for k, v in out.items()}, shape
