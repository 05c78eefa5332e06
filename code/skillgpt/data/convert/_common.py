"""What every converter shares: reading inputs, media paths, entry-level errors, skipped entries, checks.

A converter reads one public annotation file and returns a :class:`Conversion` (SkillGPT samples plus
the entries it skipped and why). Problems in the input are collected per entry and raised together as
one :class:`ConversionError` whose lines name the input file, the entry (index and id) and the field.

Media paths in the input are taken relative to ``media_root`` (default: the input file's folder) and
written relative to the output file's folder, which is where SkillGPT resolves them by default
(absolute paths stay absolute). Only the Python standard library is imported here, so the
``skillgpt`` parser stays fast; the structural checks import the data pipeline when they run.
"""
from __future__ import annotations

import csv
import io
import json
import os
import pickle
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

DEFAULT_VIEWS = ("ego", "exo1", "exo2", "exo3", "exo4")
MAX_LISTED = 20  # errors / skipped entries shown in a message


class ConversionError(ValueError):
    """The input cannot be converted; the message names the file, the entries and the fields."""


@dataclass
class Skipped:
    entry: str  # "entry 3 (take_uid abc)"
    reason: str  # short and groupable: "missing view exo2"
    detail: str = ""


@dataclass
class Conversion:
    """Result of one converter: the samples, their data.format, and what was left out."""

    samples: list[dict[str, Any]]
    format: str = "conversation"  # conversation | caption: the data.format the output needs
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. "12 <image> placeholders renamed <video>"


class Context:
    """Per-run state: where paths come from and go to, and the collected entry errors."""

    def __init__(self, input_path: Path, media_root: Optional[Path], out_path: Path) -> None:
        self.input = Path(input_path)
        self.media_root = Path(media_root) if media_root else self.input.parent
        self.out_dir = Path(out_path).parent
        self.errors: list[str] = []
        self.skipped: list[Skipped] = []
        self.notes: Counter[str] = Counter()
        self._ids: dict[str, str] = {}

    # ---- naming ----------------------------------------------------------------------------
    @staticmethod
    def entry(index: Any, key: Optional[str] = None, value: Any = None) -> str:
        return f"entry {index}" + (f" ({key} {value})" if key and value is not None else "")

    def error(self, entry: str, field_name: Optional[str], message: str) -> None:
        where = f"{self.input}: {entry}" + (f": field '{field_name}'" if field_name else "")
        self.errors.append(f"{where}: {message}")

    def skip(self, entry: str, reason: str, detail: str = "") -> None:
        self.skipped.append(Skipped(entry, reason, detail))

    def claim_id(self, sample_id: str, entry: str) -> bool:
        """Register an output id; a repeated one is an error naming both entries."""
        if sample_id in self._ids:
            self.error(entry, "id", f"id {sample_id!r} repeats the one of {self._ids[sample_id]}")
            return False
        self._ids[sample_id] = entry
        return True

    # ---- paths -----------------------------------------------------------------------------
    def path(self, value: str) -> str:
        """An input media path as the output stores it (relative to the output folder)."""
        p = Path(value)
        if p.is_absolute():
            return str(p)
        full = self.media_root / p
        return os.path.relpath(os.path.abspath(full), os.path.abspath(self.out_dir))

    def media_files(self, samples: Iterable[dict[str, Any]]) -> list[Path]:
        """Every media file the samples name, resolved as SkillGPT will resolve them."""
        out: list[Path] = []
        for s in samples:
            for kind in ("video", "image", "audio"):
                value = s.get(kind)
                values = value.values() if isinstance(value, dict) else value if isinstance(value, list) else [value]
                out += [Path(os.path.normpath(os.path.abspath(self.out_dir / str(v))))
                        for v in values if isinstance(v, str)]
        return out

    def finish(self, samples: list[dict[str, Any]], fmt: str = "conversation") -> Conversion:
        if self.errors:
            raise ConversionError(error_list(f"{self.input}: {len(self.errors)} problem(s) in the input", self.errors))
        notes = [f"{n} {what}" for what, n in self.notes.items()]
        return Conversion(samples, fmt, self.skipped, notes)


def error_list(head: str, lines: Sequence[str], limit: int = MAX_LISTED) -> str:
    shown = "\n  ".join(lines[:limit])
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"{head}:\n  {shown}{more}"


# ---- reading inputs ------------------------------------------------------------------------


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy scalars/arrays only (the public AQA annotation files);
    anything else (arbitrary callables) is refused, so a hostile pickle cannot run code."""

    ALLOWED = {
        ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"), ("builtins", "complex"),
        ("collections", "OrderedDict"), ("collections", "defaultdict"),
        ("numpy", "dtype"), ("numpy", "ndarray"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain data is accepted)")


def read_structured(path: Path) -> Any:
    """JSON, or a pickle of plain data (``.pkl`` / ``.pickle``, as FineDiving and MTL-AQA ship)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: input file not found")
    if path.suffix.lower() in (".pkl", ".pickle"):
        try:
            with path.open("rb") as f:
                return _SafeUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise ConversionError(f"{path}: cannot be read as a pickle of plain data: {err}") from err
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConversionError(f"{path}: not valid UTF-8 JSON: {err}") from err


def read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConversionError(f"{path}: not valid UTF-8 CSV: {err}") from err
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ConversionError(f"{path}: CSV header {reader.fieldnames} lacks column(s) {missing}")
    return list(reader)


def entry_list(data: Any, path: Path, key: Optional[str] = None) -> list[Any]:
    """The entries of a JSON list, or of ``data[key]`` when the file is an object (``{"annotations": [...]}``)."""
    if key and isinstance(data, dict):
        if key not in data:
            raise ConversionError(f"{path}: expected an object with '{key}' (a list of entries), "
                                  f"found keys {sorted(data)[:10]}")
        data = data[key]
    if not isinstance(data, list):
        shape = f"an object with '{key}' or a list" if key else "a list"
        raise ConversionError(f"{path}: expected {shape} of entries, got {type(data).__name__}")
    return data


def object_entries(input_path: Path, ctx: "Context") -> Iterator[tuple[int, str, dict]]:
    """(index, entry label, entry) for each object in the input's JSON list; other values are reported."""
    for i, e in enumerate(entry_list(read_structured(input_path), input_path)):
        entry = ctx.entry(i, "id", e.get("id") if isinstance(e, dict) else None)
        if not isinstance(e, dict):
            ctx.error(entry, None, f"expected an object, got {type(e).__name__}")
            continue
        yield i, entry, e


def id_of(key: Any) -> str:
    """An annotation key as a sample id: tuples (pickled AQA keys) become "a_b"."""
    if isinstance(key, (tuple, list)):
        return "_".join(str(k) for k in key)
    return str(key)


def read_split_ids(path: Path) -> list[str]:
    """Ids of a split: a JSON list, a pickled list (tuples allowed) or a text file with one id per line."""
    path = Path(path)
    if path.suffix.lower() in (".json", ".pkl", ".pickle"):
        data = read_structured(path)
        if not isinstance(data, (list, tuple)):
            raise ConversionError(f"{path}: split file must hold a list of ids, got {type(data).__name__}")
        return [id_of(k) for k in data]
    if not path.is_file():
        raise ConversionError(f"{path}: split file not found")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def number(value: Any) -> Optional[float]:
    """A finite float from an int/float/numpy scalar (not bool); None otherwise."""
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if out == out and out not in (float("inf"), float("-inf")) else None


def format_pattern(pattern: str, entry: str, ctx: Context, *args: Any, **fields: Any) -> Optional[str]:
    """``pattern.format(*args, **fields)``; a bad pattern is an error naming the fields it may use."""
    try:
        return pattern.format(*args, **fields)
    except (KeyError, IndexError, ValueError) as err:
        names = ", ".join(["{" + str(i) + "}" for i in range(len(args))] + ["{" + k + "}" for k in fields])
        ctx.error(entry, "--video-pattern", f"{pattern!r} cannot be filled ({err!r}); available: {names}")
        return None


def parse_views(views: Optional[str | Sequence[str]]) -> Optional[list[str]]:
    if views is None:
        return None
    out = [v.strip() for v in (views.split(",") if isinstance(views, str) else views) if v.strip()]
    if not out or len(set(out)) != len(out):
        raise ConversionError(f"--views: expected distinct comma-separated view names, got {views!r}")
    return out


def view_video(raw: Any, ctx: Context, entry: str, views: Optional[list[str]], skip_incomplete: bool,
               single_view: bool) -> Optional[str | dict[str, str]]:
    """Ego-Exo4D ``video_paths`` -> the sample's ``video`` (views dict, or one path with single_view).

    A requested view the take lacks is an error, or a skipped entry with ``skip_incomplete``."""
    if not isinstance(raw, dict) or not raw:
        ctx.error(entry, "video_paths", f"expected an object view -> video path, got {raw!r}")
        return None
    bad = [v for v, p in raw.items() if not isinstance(p, str) or not p]
    wanted = views if views is not None else list(raw)
    lacking = [v for v in wanted if v not in raw or v in bad]
    if lacking:
        detail = f"video_paths has {sorted(raw)}"
        if skip_incomplete:
            ctx.skip(entry, f"missing view {','.join(lacking)}", detail)
        else:
            ctx.error(entry, f"video_paths.{lacking[0]}", f"missing view(s) {lacking} ({detail}); "
                      "use --skip-incomplete to leave such takes out")
        return None
    if single_view:
        return ctx.path(raw[wanted[0]])
    return {v: ctx.path(raw[v]) for v in wanted}


def with_placeholder(question: Optional[str], default: str, placeholder: str = "<video>") -> str:
    """A question for the first human turn, with exactly one placeholder (prepended when absent)."""
    if not question:
        return default
    n = question.count(placeholder)
    if n > 1:
        raise ConversionError(f"--question: {question!r} has {n} {placeholder} placeholders; expected one")
    return question if n == 1 else f"{placeholder}\n{question}"


def letter(i: int) -> str:
    return string.ascii_uppercase[i]


def check_samples(samples: list[dict[str, Any]], fmt: str, out_path: Path) -> None:
    """Every converted sample must pass SkillGPT's dataset checks (fields, placeholder counts, turns)."""
    from skillgpt.data.validate import structure_problems

    problems: list[str] = []
    for i, s in enumerate(samples):
        problems += [str(p) for p in structure_problems(s, i, fmt, str(out_path))]
    if problems:  # a converter bug, not bad input: say so
        raise ConversionError(error_list("converted samples fail SkillGPT's dataset checks (please report)", problems))
