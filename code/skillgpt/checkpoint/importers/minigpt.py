"""MiniGPT-4 and MiniGPT-v2 checkpoints as SkillGPT checkpoints.

The original file (``runner_base._save_checkpoint``) is ``{"model": state dict without frozen parameters,
"optimizer", "config", "scaler", "epoch"}``; only ``model`` (and ``config``, for the settings) is read.

* **MiniGPT-4**: ``llama_proj.{weight,bias}`` [llm width, 768] after the BLIP-2 Q-Former's 32 query tokens on
  EVA-CLIP ViT-g/14 at 224 px. Neither the ViT nor the Q-Former nor the LLM is in the file: they are given as
  local files (``vit=`` eva_vit_g.pth, ``qformer=`` the BLIP-2 checkpoint, ``--base-llm`` Vicuna v0 or
  Llama-2-chat). Template ``minigpt4`` (``model_type pretrain_vicuna0``) or ``minigpt4_llama2``
  (``pretrain_llama2``), from the file's config or ``template=``.
* **MiniGPT-v2**: ``llama_proj`` [llm width, 5632] after ViT-g at 448 px with four consecutive patch tokens
  concatenated (no Q-Former), plus LoRA on the LLM (peft 0.2.0 keys, no adapter name:
  ``llama_model.base_model.model.model.layers.N.self_attn.{q,v}_proj.lora_{A,B}.weight``; r from the
  tensors, alpha from the file's config ``lora_alpha``, default 16, dropout 0.05). Template ``minigpt_v2``.

Pixels: the run gets ``RUN/blip2_processor/preprocessor_config.json`` (``data.video.processor``), rules that do
what MiniGPT's ``Blip2ImageEvalProcessor`` does (square resize, bicubic, no crop, CLIP mean/std).

Buffers the original's save keeps (``*.rotary_emb.inv_freq``, ``*.position_ids``) are skipped; any other key
is named in the error.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from skillgpt.checkpoint.importers.common import Adapter, check_keys, make_config, write_checkpoint
from skillgpt.models.encoders.eva_clip import CLIP_MEAN, CLIP_STD
from skillgpt.models.llm import DTYPES

PROJECTOR_KEYS = ("llama_proj.weight", "llama_proj.bias")
BUFFER_SUFFIXES = ("rotary_emb.inv_freq", "position_ids")  # non-parameters runner_base keeps in the file
# peft 0.2.0 (MiniGPT's pin) names no adapter; a run with peft >= 0.3 has ".default" before ".weight"
LORA_KEY = re.compile(r"^llama_model\.(base_model\.model\.model\.layers\.\d+\.self_attn\.(\w+)\.lora_[AB])"
                      r"(?:\.default)?\.weight$")
# MiniGPT-4's model_type (train/eval config) -> the template it trained with
MINIGPT4_TEMPLATES = {"pretrain_vicuna0": "minigpt4", "pretrain_llama2": "minigpt4_llama2"}
VIT_LAYERS, VIT_HEADS, QFORMER_HEADS = 39, 16, 12  # EVA-CLIP ViT-g as LAVIS builds it; BERT-base Q-Former
V2_LORA_ALPHA, V2_LORA_DROPOUT = 16, 0.05  # minigpt_v2.py defaults
VIT_HOW = "--encoder FILE (vit=FILE)"


def _read(src: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(the "model" tensors, the model section of "config") of a MiniGPT checkpoint, without pickled code."""
    if not src.is_file():
        raise FileNotFoundError(f"{src}: expected the MiniGPT checkpoint file (.pth)")
    try:
        raw = torch.load(str(src), map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{src}: not a checkpoint readable without running pickled code ({err})") from err
    if not isinstance(raw, Mapping) or not isinstance(raw.get("model"), Mapping):
        raise ValueError(f"{src}: expected MiniGPT's {{'model': state_dict, ...}} checkpoint")
    state = {k: v for k, v in raw["model"].items() if isinstance(v, torch.Tensor) and not k.endswith(BUFFER_SUFFIXES)}
    config = raw.get("config") if isinstance(raw.get("config"), Mapping) else {}
    model_cfg = config.get("model", config) if isinstance(config.get("model", config), Mapping) else {}
    return state, dict(model_cfg)


def _file(value: str | Path | None, how: str, what: str, src: Path) -> Path:
    path = Path(value).expanduser() if value else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{src}: {what} is not in the MiniGPT checkpoint; give it as {how}; "
                                f"{path or 'none given'} is not a file")
    return path.absolute()


def _base(base_llm: Path | None, src: Path) -> Path:
    if base_llm is None or not (base_llm / "config.json").is_file():
        raise FileNotFoundError(f"--base-llm: {src} holds only MiniGPT's trained parts; give the base LLM folder "
                                f"it was trained on ({base_llm or 'none given'} has no config.json)")
    return base_llm.absolute()


def _llm_config(base: Path) -> dict[str, Any]:
    return json.loads((base / "config.json").read_text())


def write_blip2_processor(out: Path, size: int) -> Path:
    """``out/blip2_processor/preprocessor_config.json``: pixel rules doing what MiniGPT's
    ``Blip2ImageEvalProcessor`` does (resize to size x size, bicubic, no crop; CLIP mean/std)."""
    folder = Path(out) / "blip2_processor"
    folder.mkdir(parents=True, exist_ok=True)
    rules = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
             "resample": 3, "do_center_crop": False, "do_rescale": True, "rescale_factor": 1 / 255,
             "do_normalize": True, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD), "do_convert_rgb": True}
    (folder / "preprocessor_config.json").write_text(json.dumps(rules, indent=2) + "\n")
    return folder.absolute()


def _settings(system: str, base: Path, template: str, dtype: str | None, encoder: dict[str, Any],
              out: Path) -> dict[str, Any]:
    llm_cfg = _llm_config(base)
    stored = str(llm_cfg.get("dtype") or llm_cfg.get("torch_dtype") or "float32")
    llm_dtype = dtype or (stored if stored in DTYPES else "float32")
    if llm_dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {llm_dtype!r}")
    return {
        "preset": system,
        "model.encoder": {"name": "eva_clip", "output": "clip_tokens", "pool": 1, "dtype": llm_dtype, **encoder},
        "model.projector.name": "linear",
        "model.llm": {"path": str(base), "template": template, "dtype": llm_dtype},
        # one image = one frame, as BLIP-2's eval processor makes it
        "data.video": {"num_clips": 1, "frames_per_clip": 1, "num_crops": 1, "resolution": encoder["image_size"],
                       "processor": str(write_blip2_processor(out, int(encoder["image_size"])))},
    }


def _overlay(encoder: dict[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """`encoder` with the ``model.encoder.*`` entries of the command line's ``--set`` applied."""
    nested = settings.get("model.encoder", {})
    dotted = {k[len("model.encoder."):]: v for k, v in settings.items() if k.startswith("model.encoder.")}
    return {**encoder, **(nested if isinstance(nested, Mapping) else {}), **dotted}


def _not_encoder(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``--set`` entries `_overlay` did not take (those are in the encoder settings, paths made absolute)."""
    return {k: v for k, v in settings.items() if not (k == "model.encoder" or k.startswith("model.encoder."))}


def _projector(src: Path, state: dict[str, torch.Tensor], in_dim: int, base: Path) -> dict[str, torch.Tensor]:
    weight = state["llama_proj.weight"]
    width = _llm_config(base).get("hidden_size")
    if tuple(weight.shape) != (width, in_dim):
        raise ValueError(f"{src}: llama_proj maps {weight.shape[1]} -> {weight.shape[0]}, but the visual path gives "
                         f"{in_dim} and the base LLM {base} is {width} wide")
    return {"video.weight": weight.float(), "video.bias": state["llama_proj.bias"].float()}


def _encoder_width(encoder: dict[str, Any]) -> int:
    """Width of the tokens the configured eva_clip path yields (read from the weight files' shapes)."""
    from skillgpt.models.encoders.pixels import read_state

    if encoder.get("qformer"):
        return int(read_state(encoder["qformer"])["query_tokens"].shape[-1])
    return int(read_state(encoder["checkpoint"])["cls_token"].shape[-1]) * int(encoder["merge_tokens"])


def import_minigpt4(src: Path, out: Path, base_llm: Path | None, vit: str | Path | None = None,
                    qformer: str | Path | None = None, template: str | None = None, image_size: int | None = None,
                    vision_layers: int = VIT_LAYERS, vision_heads: int = VIT_HEADS, qformer_heads: int = QFORMER_HEADS,
                    dtype: str | None = None, encoder: str | Path | None = None,
                    settings: Mapping[str, Any] | None = None, **options: Any) -> Path:
    """Import a MiniGPT-4 checkpoint (``llama_proj`` after the Q-Former) into run folder `out`. `encoder`
    (``--encoder``) is the ViT file like `vit`; `settings` (``--set``) change the written config, the
    Q-Former file too (``model.encoder.qformer``)."""
    if options:
        raise ValueError(f"--from minigpt4: unknown options {sorted(options)} (known: vit/encoder, qformer, template, "
                         "image_size, vision_layers, vision_heads, qformer_heads, dtype, settings)")
    settings = dict(settings or {})
    state, model_cfg = _read(src)
    check_keys(src, state, PROJECTOR_KEYS)
    base = _base(base_llm, src)
    model_type = model_cfg.get("model_type")
    chosen = template or settings.get("model.llm.template") or MINIGPT4_TEMPLATES.get(model_type)
    if chosen not in MINIGPT4_TEMPLATES.values():
        raise ValueError(f"{src}: cannot tell the template (config model_type {model_type!r}; known "
                         f"{sorted(MINIGPT4_TEMPLATES)}); give --set model.llm.template=minigpt4 (Vicuna v0) or "
                         "minigpt4_llama2 (template=...)")
    encoder_cfg = _overlay({"checkpoint": vit or encoder, "qformer": qformer, "merge_tokens": 1,
                            "vision_layers": int(vision_layers), "vision_heads": int(vision_heads),
                            "qformer_heads": int(qformer_heads),
                            "image_size": int(image_size or model_cfg.get("image_size") or 224)}, settings)
    encoder_cfg["checkpoint"] = str(_file(encoder_cfg["checkpoint"], VIT_HOW, "the EVA-CLIP ViT-g (eva_vit_g.pth)", src))
    encoder_cfg["qformer"] = str(_file(encoder_cfg["qformer"], "--set model.encoder.qformer=FILE (qformer=FILE)",
                                       "the BLIP-2 Q-Former checkpoint (blip2_pretrained_flant5xxl.pth)", src))
    projector = _projector(src, state, _encoder_width(encoder_cfg), base)
    cfg = make_config(_settings("minigpt4", base, chosen, dtype, encoder_cfg, out), out, _not_encoder(settings))
    source = {"system": "minigpt4", "src": str(src.absolute()), "model_type": model_type, "template": chosen,
              "vit": encoder_cfg["checkpoint"], "qformer": encoder_cfg["qformer"], "base_llm": str(base)}
    return write_checkpoint(out, cfg, projector=projector, source=source)


def _v2_adapter(src: Path, state: dict[str, torch.Tensor], model_cfg: dict[str, Any]) -> Adapter:
    weights, targets = {}, set()
    for key, value in state.items():
        m = LORA_KEY.match(key)
        if m:
            weights[m.group(1) + ".weight"] = value.float()
            targets.add(m.group(2))
    if not weights:
        raise ValueError(f"{src}: no LoRA weights (llama_model.base_model.model.model.layers.N.self_attn.*.lora_A/B); "
                         "a MiniGPT-v2 checkpoint has them (lora_r 64)")
    ranks = {v.shape[0] for k, v in weights.items() if k.endswith("lora_A.weight")}
    if len(ranks) != 1:
        raise ValueError(f"{src}: LoRA A matrices of different ranks {sorted(ranks)}")
    r = ranks.pop()
    if model_cfg.get("lora_r") not in (None, r):
        raise ValueError(f"{src}: config lora_r {model_cfg['lora_r']} but the LoRA tensors have rank {r}")
    alpha = float(model_cfg.get("lora_alpha", V2_LORA_ALPHA))
    return Adapter(weights=weights, r=r, alpha=alpha, dropout=float(model_cfg.get("lora_dropout", V2_LORA_DROPOUT)),
                   target_modules=sorted(targets))


def import_minigpt_v2(src: Path, out: Path, base_llm: Path | None, vit: str | Path | None = None,
                      image_size: int | None = None, vision_layers: int = VIT_LAYERS, vision_heads: int = VIT_HEADS,
                      dtype: str | None = None, encoder: str | Path | None = None,
                      settings: Mapping[str, Any] | None = None, **options: Any) -> Path:
    """Import a MiniGPT-v2 checkpoint (``llama_proj`` on 4 merged ViT tokens + LoRA) into run folder `out`.
    `encoder` (``--encoder``) is the ViT file like `vit`; `settings` (``--set``) change the written config."""
    if options:
        raise ValueError(f"--from minigpt_v2: unknown options {sorted(options)} (known: vit/encoder, image_size, "
                         "vision_layers, vision_heads, dtype, settings)")
    settings = dict(settings or {})
    state, model_cfg = _read(src)
    lora_keys = [k for k in state if LORA_KEY.match(k)]
    check_keys(src, state, PROJECTOR_KEYS, optional=lora_keys)
    base = _base(base_llm, src)
    adapter = _v2_adapter(src, state, model_cfg)
    encoder_cfg = _overlay({"checkpoint": vit or encoder, "qformer": None, "merge_tokens": 4,
                            "vision_layers": int(vision_layers), "vision_heads": int(vision_heads),
                            "image_size": int(image_size or model_cfg.get("image_size") or 448)}, settings)
    encoder_cfg["checkpoint"] = str(_file(encoder_cfg["checkpoint"], VIT_HOW, "the EVA-CLIP ViT-g (eva_vit_g.pth)", src))
    projector = _projector(src, state, _encoder_width(encoder_cfg), base)
    cfg = make_config(_settings("minigpt_v2", base, "minigpt_v2", dtype, encoder_cfg, out), out, _not_encoder(settings))
    source = {"system": "minigpt_v2", "src": str(src.absolute()), "vit": encoder_cfg["checkpoint"], "base_llm": str(base),
              "lora_r": adapter.r, "lora_alpha": adapter.alpha}
    return write_checkpoint(out, cfg, projector=projector, adapter=adapter, source=source)
