"""Compose, validate, save and compare run configs (plain OmegaConf, no Hydra).

Merge order of `load_config` (later wins):
  schema defaults <- <config_dir>/base.yaml <- stage file <- model preset (without its
  `stage_<N>:` sections) <- the preset's `stage_<stage>` section <- command-line overrides.
<config_dir> is the stage file's folder, or its parent when only the parent holds a base.yaml (a recipe's
stage files in a subfolder, e.g. config/nextgpt/stage_2.yaml, share config/base.yaml and config/model/).

Every problem is a `ConfigError` whose message starts with where the value came from
(a file, a preset section or "command line") followed by the full dotted key.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .rules import (  # noqa: F401 (ConfigError, CHOICES...: re-exported, the old import path)
    CHOICES, LIST_CHOICES, MINIMUMS, MISSING_VALUE, ONLY_SUPPORTED, ConfigError, check_layer, choice_problems,
    field_type, is_placeholder, raise_problems, suggest,
)
from .schema import Config

PathLike = Union[str, os.PathLike]
CLI = "command line"
DEFAULT = "schema default"

_STAGE_SECTION = re.compile(r"stage_(\d+)")
_DOTTED_KEY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


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
    raise_problems(check_layer(layer, source))
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
        if isinstance(value, (bool, int, float)) and field_type(key) is str:
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
    raise_problems(problems)
    return common, sections


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
    raise_problems(choice_problems(values, sources.of))
    _resolve_processor(obj)
    return obj


def _resolve_processor(cfg: Config) -> None:
    """``data.video.processor: auto`` -> the video encoder's own pixel rules: the model folder of a Hugging
    Face encoder that has a preprocessor_config.json, else null, ImageBind's reference preprocessing (a
    folder without one is fed re-normalised pixels with model.encoder.mean/std, see models/encoders/hf.py).
    Saved configs keep the result: a folder path (a model file, like model.encoder.path) or null."""
    from skillgpt.pixel_rules import AUTO, BUILTIN_ENCODER_RULES, PROCESSOR_ENCODERS

    video, encoder = cfg.data.video, cfg.model.encoder
    if video.processor == AUTO and encoder.name in BUILTIN_ENCODER_RULES:  # the original's own preprocessing
        video.processor = BUILTIN_ENCODER_RULES[encoder.name]
    elif video.processor == AUTO:
        own = encoder.name in PROCESSOR_ENCODERS and encoder.path
        has_rules = own and (Path(encoder.path).expanduser() / "preprocessor_config.json").is_file()
        video.processor = encoder.path if has_rules else None


def config_dir_of(stage_path: Path) -> Path:
    """The folder holding base.yaml and model/ for a stage file: its own, or its parent's (a recipe folder)."""
    own = stage_path.parent
    if not (own / "base.yaml").is_file() and (own.parent / "base.yaml").is_file():
        return own.parent
    return own


def load_config(
    stage_file: PathLike,
    overrides: Sequence[str] = (),
    config_dir: Optional[PathLike] = None,
) -> Config:
    """Compose base.yaml, the stage file, the model preset and overrides into a typed Config."""
    stage_path = Path(stage_file)
    cdir = Path(config_dir) if config_dir is not None else config_dir_of(stage_path)
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
                raise_problems(choice_problems(_flatten(section), lambda _k, w=where: w))

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
