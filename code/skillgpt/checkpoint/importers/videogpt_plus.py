"""VideoGPT+ runs as SkillGPT checkpoints: the dual encoder (InternVideo2 video tower on 4-frame chunks + CLIP
image tower on context frames), its two projectors, and its LoRA fine-tuning.

Accepted sources (github.com/mbzuai-oryx/VideoGPT-plus layouts):
* a LoRA fine-tuning folder (``finetune_dual_encoder.sh``): ``adapter_model.{safetensors,bin}`` +
  ``adapter_config.json`` (LoRA on the LLM's layers, VideoGPT+ uses r 128 / alpha 256), ``non_lora_trainables.bin``
  (``base_model.model.model.mm_projector.{0,2}.*`` 1408 -> d and ``...image_mm_projector.{0,2}.*`` 1024 -> d) and
  VideoGPT+'s ``config.json`` (``mm_*`` settings);
* projector pretraining outputs: the video tower's ``mm_projector.bin`` (``model.mm_projector.*``) as SRC and the
  image tower's (``model.image_mm_projector.*``) as the option ``image_projector``.

What the checkpoint reproduces (VideoGPT+'s arch.py): the video tower's tokens per chunk without the class token,
``mlp2x_gelu`` on every token then adaptive pooling to 8 x 8 per frame; the CLIP tower's ``hidden_states[-2]``
patch tokens, ``mlp2x_gelu`` then pooling to 12 x 12 per context image; the context images' tokens first, then
the video's; the ``phi3_instruct`` template. The files hold neither tower nor the LLM: the InternVideo2
checkpoint (``--encoder FILE``), the CLIP folder (``--context-encoder DIR``) and the base LLM (``--base-llm``)
are local paths.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from skillgpt.checkpoint.importers.common import (
    check_keys, check_options, load_state, make_config, require_base_llm, write_checkpoint,
)
from skillgpt.checkpoint.importers.llava import ADAPTER_FILES, default_dtype, read_json, read_adapter
from skillgpt.models.llm import DTYPES

MLP_KEYS = ("0.weight", "0.bias", "2.weight", "2.bias")
BRANCHES = {"video": "mm_projector", "context": "image_mm_projector"}  # SkillGPT branch -> VideoGPT+ module
POOLED = {"video": 8, "context": 12}  # arch.py project(): apply_adaptive_avg_pooling shapes


def _videogpt_config(folder: Path) -> dict[str, Any]:
    """VideoGPT+'s config.json beside the weights ({} when absent), refusing settings SkillGPT does not follow."""
    path = folder / "config.json"
    cfg = read_json(path) if path.is_file() else {}
    for key, allowed in (("mm_projector_type", ("mlp2x_gelu", None)), ("image_mm_projector_type", ("mlp2x_gelu", None)),
                         ("mm_use_im_start_end", (False, None)), ("mm_vision_select_feature", ("patch", None))):
        if cfg.get(key) not in allowed:
            raise ValueError(f"{path}: {key}={cfg.get(key)!r} is not supported (VideoGPT+'s released runs use "
                             f"{allowed[0]!r})")
    return cfg


def _projectors(src: Path, image_projector: Path | None) -> tuple[Path, dict[str, torch.Tensor], bool]:
    """(weights file, SkillGPT projector state ``video.mlp.*`` / ``context.mlp.*``, is a LoRA run)."""
    lora = src.is_dir() and any((src / f).is_file() for f in ADAPTER_FILES)
    if lora:
        path = src / "non_lora_trainables.bin"
        state, prefixes = load_state(path), {b: f"base_model.model.model.{m}." for b, m in BRANCHES.items()}
        sources = {b: (path, state) for b in BRANCHES}
    else:
        path = src / "mm_projector.bin" if src.is_dir() else src
        if not path.is_file():
            raise FileNotFoundError(f"{src}: neither {ADAPTER_FILES[0]} (a LoRA run) nor mm_projector.bin (projector "
                                    "pretraining)")
        if image_projector is None:
            raise ValueError(f"{src}: a projector-only import needs the image tower's mm_projector.bin too "
                             "(option image_projector=FILE)")
        sources = {"video": (path, load_state(path)), "context": (image_projector, load_state(image_projector))}
        prefixes = {b: f"model.{m}." for b, m in BRANCHES.items()}
    projector: dict[str, torch.Tensor] = {}
    for branch, (file, state) in sources.items():
        expected = [prefixes[branch] + k for k in MLP_KEYS]
        check_keys(file, state, expected, optional=[k for k in state if not k.startswith(prefixes[branch])]
                   if lora else ())
        projector |= {f"{branch}.mlp.{k}": state[prefixes[branch] + k].float() for k in MLP_KEYS}
    return path, projector, lora


def _pool(grid: int, branch: str, what: Path) -> int:
    """The ``pool`` setting that gives VideoGPT+'s fixed pooled grid from a tower's patch grid."""
    if grid % POOLED[branch]:
        raise ValueError(f"{what}: a {grid} x {grid} patch grid cannot be pooled to VideoGPT+'s "
                         f"{POOLED[branch]} x {POOLED[branch]} by an integer factor")
    return grid // POOLED[branch]


def import_videogpt_plus(src: Path, out: Path, base_llm: Path | None, encoder: str | Path | None = None,
                         context_encoder: str | Path | None = None, image_projector: str | Path | None = None,
                         dtype: str | None = None, vision_heads: int = 16, settings: dict[str, Any] | None = None,
                         **options: Any) -> Path:
    """Import a VideoGPT+ LoRA run folder (or projector files) into run `out`. Options: encoder (the InternVideo2
    checkpoint), context_encoder (the CLIP folder), image_projector (projector-only imports), dtype (default: the
    base LLM's), vision_heads (InternVideo2's, 16 for 1B), settings (config overrides)."""
    check_options("videogpt_plus", options, "encoder, context_encoder, image_projector, dtype, vision_heads, settings")
    base_llm = require_base_llm(base_llm, "VideoGPT+", "Phi-3-mini")
    folder = src if src.is_dir() else src.parent
    vcfg = _videogpt_config(folder)
    path, projector, lora = _projectors(src, Path(image_projector) if image_projector else None)
    tower = Path(encoder or vcfg.get("mm_vision_tower") or "").expanduser()
    if not tower.is_file():
        named = vcfg.get("mm_vision_tower", "InternVideo2-stage2_1b-224p-f4.pt")
        raise FileNotFoundError(f"{src}: the InternVideo2 checkpoint ({named}) is needed as a local file: pass it "
                                "with --encoder FILE")
    clip = Path(context_encoder or vcfg.get("image_mm_vision_tower") or "").expanduser()
    if not (clip / "config.json").is_file():
        raise FileNotFoundError(f"{src}: the image tower ({vcfg.get('image_mm_vision_tower', 'a CLIP ViT-L/14-336')}) "
                                "is needed as a local Hugging Face folder: pass it with --context-encoder DIR")
    clip_cfg = read_json(clip / "config.json")
    clip_cfg = clip_cfg.get("vision_config", clip_cfg)
    widths = {"video": 1408 if "mm_hidden_size" not in vcfg else int(vcfg["mm_hidden_size"]),
              "context": int(clip_cfg["hidden_size"])}
    llm_width = int(read_json(base_llm / "config.json")["hidden_size"])
    for branch in BRANCHES:
        first, last = projector[f"{branch}.mlp.0.weight"], projector[f"{branch}.mlp.2.weight"]
        if first.shape[1] != widths[branch] or last.shape[0] != llm_width:
            raise ValueError(f"{path}: the {BRANCHES[branch]} maps {first.shape[1]} -> {last.shape[0]}, but its tower "
                             f"is {widths[branch]} wide and the base LLM {base_llm} {llm_width}")
    llm_dtype = dtype or default_dtype(base_llm)
    if llm_dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {llm_dtype!r}")
    clip_grid = int(clip_cfg.get("image_size", 336)) // int(clip_cfg.get("patch_size", 14))
    layer = {
        "preset": "videogpt-plus", "run_name": out.name, "stage": 2,
        "model.encoder": {"name": "internvideo2", "checkpoint": str(tower.absolute()), "output": "clip_tokens",
                          "keep_cls": False, "pool": 1, "image_size": 224, "patch_size": 14,
                          "vision_heads": int(vision_heads), "dtype": llm_dtype},
        "model.projector": {"name": "pool", "pool": _pool(224 // 14, "video", tower), "pool_after_mlp": True},
        "model.context": {"enabled": True, "frames": 16, "position": "before",
                          "encoder": {"name": "hf_image", "path": str(clip.absolute()), "output": "clip_tokens",
                                      "keep_cls": False, "pool": 1, "dtype": llm_dtype,
                                      "select_layer": int(vcfg.get("mm_vision_select_layer", -2))},
                          "projector": {"name": "pool", "pool": _pool(clip_grid, "context", clip),
                                        "pool_after_mlp": True}},
        "model.llm": {"path": str(base_llm.absolute()), "template": "phi3_instruct", "dtype": llm_dtype,
                      "max_length": int(vcfg.get("tokenizer_model_max_length") or 4096)},
        "data.video": {"sampling": "videogpt_plus", "sample_fps": 1.0, "max_frames": 16, "min_frames": 8,
                       "num_clips": 4, "frames_per_clip": 4, "num_crops": 1, "processor": "internvideo2"},
    }
    cfg = make_config(layer, out, settings or {})
    source = {"system": "videogpt_plus", "src": str(src.absolute()), "weights": str(path.absolute()), "lora": lora,
              "video_tower": str(tower.absolute()), "image_tower": str(clip.absolute()),
              "base_llm": str(base_llm.absolute())}
    return write_checkpoint(out, cfg, projector=projector, adapter=read_adapter(src) if lora else None, source=source)
