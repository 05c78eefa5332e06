"""What a run config may hold: the schema's keys and types, enum-like choices, minimums and the values this
version refuses, checked layer by layer (a YAML file, a preset section, the command line) before merging.
`skillgpt.config.loader` composes the layers and reports every problem these checks find.
"""
from __future__ import annotations

import dataclasses
import difflib
from functools import lru_cache
from typing import Any, Callable, Optional, Sequence, Union, get_args, get_origin, get_type_hints

from .schema import Config

MISSING_VALUE = "???"

# Allowed values of enum-like fields.
CHOICES: dict[str, tuple[Any, ...]] = {
    "model.llm.dtype": ("float32", "bfloat16", "float16"),
    "model.encoder.output": ("pooled", "clip_embeddings", "clip_tokens"),
    "model.encoder.dtype": ("float32", "bfloat16", "float16"),
    "model.context.encoder.dtype": ("float32", "bfloat16", "float16"),
    "freeze.encoder": ("frozen", "full"),
    "freeze.projector": ("frozen", "full"),
    "freeze.llm": ("frozen", "lora", "full"),
    "freeze.generation": ("frozen", "full"),
    "model.generation.projector": ("linear", "transformer"),
    "train.precision": ("auto", "fp32", "bf16"),
    "data.format": ("conversation", "caption"),
    "data.view_mode": ("fuse", "separate"),
    "data.on_bad_sample": ("error", "skip"),
    "eval.task": ("proficiency", "multiple_choice", "score", "feedback", "generation"),
    "eval.option_scoring": ("sum", "mean"),
    "data.feature_cache_mode": ("auto", "require"),
    "model.context.position": ("before", "after"),
    "model.audio.output": ("pooled", "clip_embeddings", "clip_tokens"),
    "data.video.num_crops": (1, 3),  # centre crop, or ImageBind's three (left/centre/right, top/centre/bottom)
    "data.video.sampling": ("clips", "videogpt_plus"),
    "generation.dtype": ("auto", "float32", "float16", "bfloat16"),
    **{f"generation.decoders.{m}.negative": ("empty", "zeros") for m in ("image", "video", "audio")},
}
# Allowed items of list fields (each at most once).
LIST_CHOICES: dict[str, tuple[str, ...]] = {
    "train.report_to": ("tensorboard", "wandb"),  # skillgpt.train.reporting.BACKENDS
}
# Inclusive lower bounds of numeric fields.
MINIMUMS: dict[str, int] = {
    "model.encoder.pool": 1, "model.context.encoder.pool": 1, "model.projector.pool": 1,
    "model.context.projector.pool": 1, "model.context.frames": 1, "data.video.num_clips": 1,
    "data.video.frames_per_clip": 1, "data.video.max_frames": 1, "data.video.min_frames": 1, "data.audio.num_clips": 1, "train.eval_every": 0,
    "model.generation.image_tokens": 0, "model.generation.video_tokens": 0, "model.generation.audio_tokens": 0,
    "model.generation.hidden_dim": 1, "model.generation.heads": 1, "model.generation.encoder_layers": 1,
    "model.generation.decoder_layers": 1,
    **{f"generation.decoders.{m}.steps": 1 for m in ("image", "video", "audio")},
    **{f"generation.decoders.{m}.{k}": 8 for m in ("image", "video") for k in ("height", "width")},
    "generation.decoders.video.num_frames": 1, "generation.decoders.video.fps": 1,
}

# Keys whose other values the schema admits but this version refuses: key -> (the supported value, why).
ONLY_SUPPORTED: dict[str, tuple[Any, str]] = {
    "freeze.encoder": ("frozen", "the encoders are frozen feature extractors (kept out of the DeepSpeed engine "
                       "and of the optimizer, their features cacheable); training them is not implemented"),
}


class ConfigError(ValueError):
    """An invalid config: unknown key, wrong type, missing or invalid value, bad file."""


def raise_problems(problems: list[str]) -> None:
    """Raise one ConfigError listing every problem (no-op when there are none)."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} config problems:\n  " + "\n  ".join(problems))


@lru_cache(maxsize=None)
def schema_hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a schema dataclass."""
    return get_type_hints(cls)


def strip_optional(tp: Any) -> Any:
    """`Optional[X]` -> `X`; anything else unchanged."""
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def field_type(key: str) -> Optional[Any]:
    """Declared type (Optional stripped) of a dotted key, or None if not in the schema."""
    tp: Any = Config
    for part in key.split("."):
        if not (dataclasses.is_dataclass(tp) and part in schema_hints(tp)):
            return None
        tp = strip_optional(schema_hints(tp)[part])
    return tp


@lru_cache(maxsize=None)
def all_keys(cls: type = Config, prefix: str = "") -> tuple[str, ...]:
    """Every dotted key of the schema, sections included."""
    out: list[str] = []
    for name, tp in schema_hints(cls).items():
        full = prefix + name
        out.append(full)
        tp = strip_optional(tp)
        if dataclasses.is_dataclass(tp):
            out.extend(all_keys(tp, full + "."))
    return tuple(out)


def suggest(prefix: str, name: str, siblings: Sequence[str]) -> str:
    """' (did you mean ...?)' from close sibling names, else from keys anywhere in the schema."""
    close = [prefix + s for s in difflib.get_close_matches(name, siblings, n=3, cutoff=0.6)]
    if not close:
        full = prefix + name
        anywhere = [k for k in all_keys() if k.rsplit(".", 1)[-1] == name]
        close = anywhere or difflib.get_close_matches(full, all_keys(), n=3, cutoff=0.75)
    return f" (did you mean {', '.join(close[:3])}?)" if close else ""


def is_placeholder(value: Any) -> bool:
    """Values whose shape is only known after merging/resolving: null, ???, ${...}."""
    return value is None or (isinstance(value, str) and (value == MISSING_VALUE or "${" in value))


def check_layer(layer: dict, source: str, cls: type = Config, prefix: str = "") -> list[str]:
    """Unknown keys and section/list/scalar shape mismatches of one layer against the schema."""
    problems: list[str] = []
    hints = schema_hints(cls)
    for key, value in layer.items():
        full = f"{prefix}{key}"
        if not isinstance(key, str) or key not in hints:
            problems.append(f"{source}: {full}: unknown key{suggest(prefix, str(key), list(hints))}")
            continue
        tp = strip_optional(hints[key])
        if is_placeholder(value):
            continue
        if dataclasses.is_dataclass(tp):
            if isinstance(value, dict):
                problems.extend(check_layer(value, source, tp, full + "."))
            else:
                problems.append(f"{source}: {full}: expected a section ({tp.__name__}), got {value!r}")
        elif get_origin(tp) is list:
            if not isinstance(value, list):
                problems.append(f"{source}: {full}: expected a list, got {value!r}")
        elif get_origin(tp) is dict:
            if not isinstance(value, dict):
                problems.append(f"{source}: {full}: expected a mapping, got {value!r}")
        elif isinstance(value, (dict, list)):
            problems.append(f"{source}: {full}: expected a single value, got {value!r}")
    return problems


def choice_problems(values: dict[str, Any], source_of: Callable[[str], str]) -> list[str]:
    """Enum-like and range checks of the keys present in `values`."""
    problems: list[str] = []
    for key, allowed in CHOICES.items():
        if key not in values or is_placeholder(values[key]):
            continue
        value = values[key]
        if value in allowed:
            continue
        if key.startswith("freeze.") and value == "lora":
            why = "lora only applies to freeze.llm"
        else:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            why = f"expected one of {', '.join(map(str, allowed))}" + (f" (did you mean {close[0]}?)" if close else "")
        problems.append(f"{source_of(key)}: {key}: invalid value {value!r}; {why}")
    for key, allowed in LIST_CHOICES.items():
        items = values.get(key)
        if not isinstance(items, list):
            continue
        bad = [item for item in items if item not in allowed]
        if bad or len(set(items)) != len(items):
            why = f"unknown {bad[0]!r}" if bad else "an item given twice"
            problems.append(f"{source_of(key)}: {key}: {why} in {items!r}; expected a list of "
                            f"{', '.join(allowed)} ([] for none)")
    for key, low in MINIMUMS.items():
        value = values.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < low:
            problems.append(f"{source_of(key)}: {key}: must be >= {low}, got {value!r}")
    for key, (supported, why) in ONLY_SUPPORTED.items():
        value = values.get(key, supported)
        if is_placeholder(value) or value == supported or value not in CHOICES.get(key, (value,)):
            continue  # a value outside CHOICES is reported above
        problems.append(f"{source_of(key)}: {key}: {value!r} is not supported, only {supported!r}: {why}")
    return problems
