"""Reading ImageBind checkpoints: the official ``imagebind_huge.pth`` (or a ``.safetensors`` copy) filtered to
the modalities SkillGPT builds, and a strict load whose error names every missing, unexpected or misshapen
key and the file."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

MODALITIES = ("vision", "audio")
_PREFIXES = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


def _modality_of(key: str) -> Optional[str]:
    parts = key.split(".")
    if len(parts) >= 2 and parts[0] in _PREFIXES:
        return parts[1]
    return None


def load_imagebind_state(
    path: Union[str, Path], modalities: Sequence[str] = MODALITIES
) -> dict[str, Tensor]:
    """Reads an ImageBind ``.pth``/``.safetensors`` file and keeps only the given modalities' keys.

    Text, depth, thermal and IMU keys (and anything else) are dropped. A ``module.`` prefix
    (DataParallel) and a top-level ``{"model"|"state_dict": ...}`` wrapper are tolerated.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ImageBind checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw: dict = load_file(str(path), device="cpu")
    else:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
        for wrap in ("model", "state_dict"):
            if isinstance(raw, dict) and isinstance(raw.get(wrap), dict):
                raw = raw[wrap]
    if not isinstance(raw, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(raw).__name__})")
    keep = set(modalities)
    state = {}
    for key, value in raw.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if _modality_of(key) in keep and isinstance(value, Tensor):
            state[key] = value
    return state


def load_state_strict(model: nn.Module, state: dict[str, Tensor], source: str = "<state dict>") -> None:
    """``load_state_dict(strict=True)`` with an error naming missing/unexpected keys and the file."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or bad_shape:

        def show(items: list[str]) -> str:
            return ", ".join(items[:20]) + (f" ... (+{len(items) - 20} more)" if len(items) > 20 else "")

        raise RuntimeError(
            f"ImageBind checkpoint {source} does not match the model: "
            f"{len(missing)} missing keys [{show(missing)}]; "
            f"{len(unexpected)} unexpected keys [{show(unexpected)}]; "
            f"{len(bad_shape)} shape mismatches [{show(bad_shape)}]"
        )
    model.load_state_dict(state, strict=True)
