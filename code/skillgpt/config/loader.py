"""Compose, validate, save and compare run configs (plain OmegaConf, no Hydra).

Merge order of `load_config` (later wins):
  schema defaults <- <config_dir>/base.yaml <- stage file <- model preset (without its
  `stage_<N>:` sections) <- the preset's `stage_<stage>` section <- command-line overrides.

Every problem is a `ConfigError` whose message starts with where the value came from
(a file, a preset section or "command line") followed by the full dotted key.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union, get_args, get_origin, get_type_hints

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .schema import Config

PathLike = Union[str, os.PathLike]
CLI = "command line"
DEFAULT = "schema default"
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
    "train.precision": ("auto", "fp32", "bf16"),
    "data.format": ("conversation", "caption"),
    "data.view_mode": ("fuse", "separate"),
    "data.on_bad_sample": ("error", "skip"),
    "eval.task": ("proficiency", "multiple_choice", "score", "feedback"),
    "eval.option_scoring": ("sum", "mean"),
    "data.feature_cache_mode": ("auto", "require"),
    "model.context.position": ("before", "after"),
    "model.audio.output": ("pooled", "clip_embeddings", "clip_tokens"),
    "data.video.num_crops": (1, 3),  # centre crop, or ImageBind's three (left/centre/right, top/centre/bottom)
}
# Allowed items of list fields (each at most once).
LIST_CHOICES: dict[str, tuple[str, ...]] = {
    "train.report_to": ("tensorboard", "wandb"),  # skillgpt.train.reporting.BACKENDS
}
# Inclusive lower bounds of numeric fields.
MINIMUMS: dict[str, int] = {
    "model.encoder.pool": 1, "model.context.encoder.pool": 1, "model.projector.pool": 1,
    "model.context.projector.pool": 1, "model.context.frames": 1, "data.video.num_clips": 1,
    "data.video.frames_per_clip": 1, "data.audio.num_clips": 1, "train.eval_every": 0,
}

# Keys whose other values the schema admits but this version refuses: key -> (the supported value, why).
ONLY_SUPPORTED: dict[str, tuple[Any, str]] = {
    "freeze.encoder": ("frozen", "the encoders are frozen feature extractors (kept out of the DeepSpeed engine "
                       "and of the optimizer, their features cacheable); training them is not implemented"),
}

_STAGE_SECTION = re.compile(r"stage_(\d+)")
_DOTTED_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


class ConfigError(ValueError):
    """An invalid config: unknown key, wrong type, missing or invalid value, bad file."""


def _raise(problems: list[str]) -> None:
    """Raise one ConfigError listing every problem (no-op when there are none)."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} config problems:\n  " + "\n  ".join(problems))


@lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a schema dataclass."""
    return get_type_hints(cls)


def _strip_optional(tp: Any) -> Any:
    """`Optional[X]` -> `X`; anything else unchanged."""
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _field_type(key: str) -> Optional[Any]:
    """Declared type (Optional stripped) of a dotted key, or None if not in the schema."""
    tp: Any = Config
    for part in key.split("."):
        if not (dataclasses.is_dataclass(tp) and part in _hints(tp)):
            return None
        tp = _strip_optional(_hints(tp)[part])
    return tp


@lru_cache(maxsize=None)
def _all_keys(cls: type = Config, prefix: str = "") -> tuple[str, ...]:
    """Every dotted key of the schema, sections included."""
    out: list[str] = []
    for name, tp in _hints(cls).items():
        full = prefix + name
        out.append(full)
        tp = _strip_optional(tp)
        if dataclasses.is_dataclass(tp):
            out.extend(_all_keys(tp, full + "."))
    return tuple(out)


def _suggest(prefix: str, name: str, siblings: Sequence[str]) -> str:
    """' (did you mean ...?)' from close sibling names, else from keys anywhere in the schema."""
    close = [prefix + s for s in difflib.get_close_matches(name, siblings, n=3, cutoff=0.6)]
    if not close:
        full = prefix + name
        anywhere = [k for k in _all_keys() if k.rsplit(".", 1)[-1] == name]
        close = anywhere or difflib.get_close_matches(full, _all_keys(), n=3, cutoff=0.75)
    return f" (did you mean {', '.join(close[:3])}?)" if close else ""


def _is_placeholder(value: Any) -> bool:
    """Values whose shape is only known after merging/resolving: null, ???, ${...}."""
    return value is None or (isinstance(value, str) and (value == MISSING_VALUE or "${" in value))


def _check_layer(layer: dict, source: str, cls: type = Config, prefix: str = "") -> list[str]:
    """Unknown keys and section/list/scalar shape mismatches of one layer against the schema."""
    problems: list[str] = []
    hints = _hints(cls)
    for key, value in layer.items():
        full = f"{prefix}{key}"
        if not isinstance(key, str) or key not in hints:
            problems.append(f"{source}: {full}: unknown key{_suggest(prefix, str(key), list(hints))}")
            continue
        tp = _strip_optional(hints[key])
        if _is_placeholder(value):
            continue
        if dataclasses.is_dataclass(tp):
            if isinstance(value, dict):
                problems.extend(_check_layer(value, source, tp, full + "."))
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


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted key: leaf}; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _get(cfg: Config, key: str) -> Any:
    """Attribute lookup by dotted key."""
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


class _Sources(dict):
    """Dotted key -> the file / section / 'command line' that last set it."""

    def record(self, layer: dict, source: str) -> None:
        for key, value in _flatten(layer).items():
            # an empty section sets nothing; a later ??? never unsets a value (OmegaConf merge)
            if not isinstance(value, dict) and value != MISSING_VALUE:
                self[key] = source

    def of(self, key: Optional[str]) -> str:
        """Source of `key` or of its closest ancestor that was set as a whole."""
        parts = (key or "").split(".")
        for n in range(len(parts), 0, -1):
            found = self.get(".".join(parts[:n]))
            if found is not None:
                return found
        return DEFAULT


def _omega_problem(err: OmegaConfBaseException, source: str) -> str:
    """Format an OmegaConf error as 'source: full.key: message'."""
    key = getattr(err, "full_key", None) or "<root>"
    msg = (getattr(err, "msg", None) or str(err)).strip().splitlines()
    return f"{source}: {key}: {msg[0] if msg else type(err).__name__}"


def _read_yaml(path: Path, source: str) -> dict:
    """Load one YAML file as a plain (unresolved) dict; an empty file is {}."""
    if not path.is_file():
        raise ConfigError(f"{source}: file not found")
    try:
        node = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"{source}: invalid YAML: {err}") from None
    if isinstance(node, ListConfig):
        raise ConfigError(f"{source}: top level must be a mapping of config keys, not a list")
    return OmegaConf.to_container(node, resolve=False)  # type: ignore[return-value]


def _merge(cfg: DictConfig, layer: dict, source: str, sources: _Sources) -> DictConfig:
    """Strictly merge one layer into `cfg` and record where its keys came from."""
    _raise(_check_layer(layer, source))
    try:
        merged = OmegaConf.merge(cfg, layer)
    except OmegaConfBaseException as err:
        raise ConfigError(_omega_problem(err, source)) from None
    except TypeError as err:  # shape mismatches the pre-check did not foresee
        raise ConfigError(f"{source}: {err}") from None
    sources.record(layer, source)
    return merged  # type: ignore[return-value]


def parse_overrides(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """`["train.lr=3e-4", "model.llm.lora.target_modules=[q_proj,k_proj]"]` -> [(key, value)].

    Values are YAML. For str-typed fields, a bare number or boolean keeps its text
    (`run_name=007` stays "007"); quote in the shell otherwise. Keys are checked
    against the schema when the overrides are merged.
    """
    if isinstance(overrides, str):
        raise ConfigError(f"{CLI}: overrides must be a list of key=value strings, got one string")
    parsed: list[tuple[str, Any]] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{CLI}: override {item!r} is not key=value (e.g. train.lr=3e-4)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not _DOTTED_KEY.fullmatch(key):
            raise ConfigError(f"{CLI}: {key!r}: invalid key in {item!r}; use dotted names like train.lr")
        try:  # YAML with OmegaConf's rules: 3e-4 is a float, an empty value is null
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={raw}"]), resolve=False)["v"]
        except (yaml.YAMLError, OmegaConfBaseException) as err:
            raise ConfigError(f"{CLI}: {key}: cannot parse value {raw!r}: {err}") from None
        if isinstance(value, (bool, int, float)) and _field_type(key) is str:
            value = raw.strip()
        parsed.append((key, value))
    return parsed


def _nest(key: str, value: Any) -> dict:
    """'a.b.c', v -> {'a': {'b': {'c': v}}}."""
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _effective(cfg: DictConfig, cli: list[dict], key: str, sources: _Sources) -> tuple[Any, str]:
    """(value, source) of a top-level key once the command line is applied; value None if missing."""
    probe, source = cfg, sources.of(key)
    for layer in cli:
        probe = _merge(probe, layer, CLI, _Sources())
        source = CLI if key in layer else source
    if OmegaConf.is_missing(probe, key):
        return None, source
    try:
        return probe[key], source
    except OmegaConfBaseException as err:
        raise ConfigError(_omega_problem(err, source)) from None


def _preset_path(preset: str, config_dir: Path, source: str) -> Path:
    """A preset name -> <config_dir>/model/<name>.yaml; a *.yaml value or path is used as is."""
    if preset.endswith((".yaml", ".yml")) or "/" in preset or os.sep in preset:
        if not Path(preset).is_file():
            raise ConfigError(f"{source}: preset: preset file {preset!r} not found (cwd: {Path.cwd()})")
        return Path(preset)
    model_dir = config_dir / "model"
    path = model_dir / f"{preset}.yaml"
    if path.is_file():
        return path
    available = sorted(p.stem for p in model_dir.glob("*.yaml")) if model_dir.is_dir() else []
    close = difflib.get_close_matches(preset, available, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise ConfigError(
        f"{source}: preset: unknown preset {preset!r}{hint}; "
        f"available presets in {model_dir}: {', '.join(available) or '(none)'}"
    )


def _split_preset(layer: dict, source: str) -> tuple[dict, dict[int, dict]]:
    """Split a preset into its common part and its {stage number: section} overrides."""
    common: dict = {}
    sections: dict[int, dict] = {}
    problems = []
    for key, value in layer.items():
        match = _STAGE_SECTION.fullmatch(str(key))
        if match is None:
            common[key] = value
        elif value is None or isinstance(value, dict):
            sections[int(match.group(1))] = value or {}
        else:
            problems.append(f"{source}: {key}: a stage section must be a mapping, got {value!r}")
    for where, part in [(source, common)] + [(f"{source} [stage_{n}]", s) for n, s in sections.items()]:
        for key in ("preset", "stage"):
            if key in part:
                problems.append(f"{where}: {key}: a model preset cannot set {key!r}")
    _raise(problems)
    return common, sections


def _choice_problems(values: dict[str, Any], source_of: Callable[[str], str]) -> list[str]:
    """Enum-like and range checks of the keys present in `values`."""
    problems: list[str] = []
    for key, allowed in CHOICES.items():
        if key not in values or _is_placeholder(values[key]):
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
        if _is_placeholder(value) or value == supported or value not in CHOICES.get(key, (value,)):
            continue  # a value outside CHOICES is reported above
        problems.append(f"{source_of(key)}: {key}: {value!r} is not supported, only {supported!r}: {why}")
    return problems


def _missing_keys(node: Union[DictConfig, ListConfig], prefix: str = "") -> list[str]:
    """Full keys of every `???` value left in the merged config."""
    out: list[str] = []
    if isinstance(node, DictConfig):
        items = [(f"{prefix}.{k}" if prefix else str(k), k) for k in node.keys()]
    else:
        items = [(f"{prefix}[{i}]", i) for i in range(len(node))]
    for full, key in items:
        if OmegaConf.is_missing(node, key):
            out.append(full)
            continue
        try:
            child = node[key]
        except OmegaConfBaseException:
            continue  # broken interpolation: reported by to_object with its key
        if isinstance(child, (DictConfig, ListConfig)):
            out.extend(_missing_keys(child, full))
    return out


def _finalize(cfg: DictConfig, sources: _Sources, where: str) -> Config:
    """Missing-value check, conversion to the typed dataclass, then value validation."""
    if cfg.data.mixture and OmegaConf.is_missing(cfg.data, "train"):
        cfg.data.train = None  # the mixture's datasets are the training data
    missing = _missing_keys(cfg)
    if missing:
        raise ConfigError(
            f"{where}: missing required values: {', '.join(missing)}. "
            f"Set them in a config file or on the command line (e.g. {missing[0]}=...)"
        )
    try:
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_omega_problem(err, sources.of(getattr(err, "full_key", None)))) from None
    assert isinstance(obj, Config)
    values = {key: _get(obj, key) for key in [*CHOICES, *LIST_CHOICES, *MINIMUMS, *ONLY_SUPPORTED]}
    _raise(_choice_problems(values, sources.of))
    _resolve_processor(obj)
    return obj


def _resolve_processor(cfg: Config) -> None:
    """``data.video.processor: auto`` -> the video encoder's own pixel rules: the model folder of a Hugging
    Face encoder that has a preprocessor_config.json, else null, ImageBind's reference preprocessing (a
    folder without one is fed re-normalised pixels with model.encoder.mean/std, see models/encoders/hf.py).
    Saved configs keep the result: a folder path (a model file, like model.encoder.path) or null."""
    from skillgpt.pixel_rules import AUTO, PROCESSOR_ENCODERS

    video, encoder = cfg.data.video, cfg.model.encoder
    if video.processor == AUTO:
        own = encoder.name in PROCESSOR_ENCODERS and encoder.path
        has_rules = own and (Path(encoder.path).expanduser() / "preprocessor_config.json").is_file()
        video.processor = encoder.path if has_rules else None


def load_config(
    stage_file: PathLike,
    overrides: Sequence[str] = (),
    config_dir: Optional[PathLike] = None,
) -> Config:
    """Compose base.yaml, the stage file, the model preset and overrides into a typed Config."""
    stage_path = Path(stage_file)
    cdir = Path(config_dir) if config_dir is not None else stage_path.parent
    cli = [_nest(key, value) for key, value in parse_overrides(overrides)]
    sources = _Sources()
    cfg: DictConfig = OmegaConf.structured(Config)

    base = cdir / "base.yaml"
    if base.is_file() and not (stage_path.is_file() and base.samefile(stage_path)):
        cfg = _merge(cfg, _read_yaml(base, str(base)), str(base), sources)
    cfg = _merge(cfg, _read_yaml(stage_path, str(stage_path)), str(stage_path), sources)

    preset, preset_source = _effective(cfg, cli, "preset", sources)
    if preset is not None:
        path = _preset_path(str(preset), cdir, preset_source)
        common, sections = _split_preset(_read_yaml(path, str(path)), str(path))
        cfg = _merge(cfg, common, str(path), sources)
        stage, _ = _effective(cfg, cli, "stage", sources)
        for number, section in sorted(sections.items()):
            where = f"{path} [stage_{number}]"
            if number == stage:
                cfg = _merge(cfg, section, where, sources)
            else:  # inactive sections are still checked, so typos fail in every stage
                _merge(cfg, section, where, _Sources())
                _raise(_choice_problems(_flatten(section), lambda _k, w=where: w))

    for layer in cli:
        cfg = _merge(cfg, layer, CLI, sources)
    return _finalize(cfg, sources, str(stage_path))


def load_resolved(path: PathLike, overrides: Sequence[str] = ()) -> Config:
    """Load a config written by `save_config` strictly against the schema (no base/preset merging),
    then apply `key=value` overrides (e.g. another test file for `skillgpt eval`)."""
    source, sources = str(path), _Sources()
    cfg = _merge(OmegaConf.structured(Config), _read_yaml(Path(path), source), source, sources)
    for key, value in parse_overrides(overrides):
        cfg = _merge(cfg, _nest(key, value), CLI, sources)
    return _finalize(cfg, sources, source)


def save_config(cfg: Config, path: PathLike) -> Path:
    """Write the resolved config as YAML (atomically); `load_resolved(path) == cfg`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True), encoding="utf-8")
    os.replace(tmp, path)
    return path


def config_diff(a: Config, b: Config) -> list[str]:
    """Full dotted keys whose values differ between two configs (lists compare as a whole)."""
    flat_a, flat_b = _flatten(dataclasses.asdict(a)), _flatten(dataclasses.asdict(b))
    keys = list(flat_a) + [k for k in flat_b if k not in flat_a]
    absent = object()
    return [k for k in keys if flat_a.get(k, absent) != flat_b.get(k, absent)]
