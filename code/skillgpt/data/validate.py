"""`skillgpt data validate`: check a config's data splits before training, and remember the result.

For every split (``data.train``/``val``/``test``; the catalog datasets of ``data.mixture`` for train) and
every sample: the per-sample checks of :mod:`skillgpt.data.checks`, the same ones ``SkillDataset`` applies
(fields the format needs, media fields, placeholder vs media counts, assistant turns neither empty nor
holding a placeholder, ``label`` in ``eval.labels``, the tokenized length against ``model.llm.max_length``)
plus the fields only evaluation reads (numeric ``score``, ``candidates``/``answer`` that match, the fields
``eval.task`` needs on the eval split); that each media file exists **and decodes** (videos with
``load_video``, images and audio with ``load_media``); counts of labels and scenarios. Every problem
names the file, the sample id and the field.

``validate_config(cfg, splits)`` returns a :class:`ValidationReport`; ``report.raise_for_errors()``
raises one ``DataError`` listing them. Results are cached per split in ``<data stem>.validate-cache.json``
next to the data file, keyed by the file's SHA-256, the config fields that change the outcome (data
format, media root, prompts, views, video/audio sampling, model (placeholder token counts), template,
max_length, eval labels/task) and the size and mtime of the tokenizer files and of every media file the
split names, so a second run over unchanged data only hashes the file and stats the media.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Optional

from tqdm import tqdm

from skillgpt.config.schema import Config, DataConfig
from skillgpt.data.checks import Problem, check_sample, eval_task_problems, structure_problems, tokenize_sample
from skillgpt.data.templates import llm_template
from skillgpt.data.validate_report import SplitReport, ValidationReport
from skillgpt.hashing import file_sha256

# The data pipeline (torch, transformers) is imported inside the functions that need it, so a run
# answered from the cache costs no more than reading the data file.

__all__ = ["Problem", "SplitReport", "ValidationReport", "structure_problems", "validate_config"]

CACHE_VERSION = 2  # 2: empty assistant turns became errors (shared checks)
CACHE_SUFFIX = ".validate-cache.json"
CACHE_ENTRIES = 8  # results kept per data file (several configs may share one)
SPLITS = ("train", "val", "test")
_TOKENIZER_FILES = ("tokenizer", "special_tokens", "vocab", "merges", "added_tokens", "spiece", "config.json")


# ---------------------------------------------------------------------------------- cache


def _stat(path: Path) -> Optional[list[int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _tokenizer_stats(llm_path: str) -> dict[str, Any]:
    folder = Path(llm_path)
    if not folder.is_dir():
        return {"missing": str(folder)}
    return {p.name: _stat(p) for p in sorted(folder.iterdir()) if p.name.startswith(_TOKENIZER_FILES)}


def _settings(cfg: Config, data_cfg: DataConfig, is_eval_split: bool, decode: bool) -> dict[str, Any]:
    """Everything besides the data file and media files that can change a split's result (the model
    section stands for the placeholder token counts, which it determines)."""
    d = dataclasses.asdict(data_cfg)
    model = dataclasses.asdict(cfg.model)
    for k in ("lora", "dtype", "attn_implementation"):
        model["llm"].pop(k, None)
    return {
        "version": CACHE_VERSION, "decode": decode,
        "data": {k: d[k] for k in ("format", "media_root", "caption_prompts", "video", "audio", "views", "view_mode")},
        "model": model,
        "eval": {"labels": list(cfg.eval.labels), "task": cfg.eval.task if is_eval_split else None},
        "tokenizer": _tokenizer_stats(cfg.model.llm.path),
    }


def cache_path(data_file: str | os.PathLike) -> Path:
    """Where the validation results of `data_file` are kept: ``<stem>.validate-cache.json`` beside it."""
    p = Path(data_file)
    return p.with_name(p.stem + CACHE_SUFFIX)


def _cache_read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) and data.get("version") == CACHE_VERSION else {}
    except (OSError, ValueError):
        return {}


def _cache_write(path: Path, key: str, report: SplitReport) -> None:
    data = _cache_read(path)
    entries = dict(data.get("entries", {}))
    entries.pop(key, None)
    entries[key] = {"saved": time.time(), "report": report.to_dict()}
    entries = dict(list(entries.items())[-CACHE_ENTRIES:])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:  # a read-only data folder: validation still works, it is just not remembered
        tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- validation


class _Tools:
    """Tokenizer and placeholder token counts, made on first use only (a cache hit needs neither)."""

    def __init__(self, cfg: Config, tokenizer: Any, placeholder_tokens: Optional[dict[str, int]]) -> None:
        self.cfg, self._tokenizer, self._tokens = cfg, tokenizer, placeholder_tokens

    @property
    def placeholder_tokens(self) -> dict[str, int]:
        if self._tokens is None:  # layout arithmetic from the config: no model is built
            from skillgpt.models.tokens import placeholder_tokens

            self._tokens = placeholder_tokens(self.cfg)
        return self._tokens

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from skillgpt.models.llm import load_tokenizer

            self._tokenizer = load_tokenizer(self.cfg.model.llm.path)
        return self._tokenizer


def _decode(kind: str, path: Path, data_cfg: DataConfig,
            segment: Optional[tuple[float, float]] = None) -> Optional[str]:
    """None if the file decodes (a video inside its ``segment``, as training samples it), else the reason."""
    from skillgpt.data.media import MediaItem, load_media

    try:
        if kind == "video":
            from skillgpt.data.video import load_video

            load_video(path, data_cfg.video, segment=segment)
        else:
            load_media(MediaItem(kind, (path,)), data_cfg)
    except Exception as err:  # decoders raise many types; any failure here is a bad file
        return str(err) or type(err).__name__
    return None


def _read(path: Path, report: SplitReport) -> Optional[list[Any]]:
    """The file's JSON list (as ``read_samples`` reads it), or None with the problem recorded."""
    problem = None
    if not path.is_file():
        problem = "data file not found"
    else:
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            problem = f"not valid UTF-8 JSON: {err}"
        else:
            if not isinstance(records, list):
                problem = f"expected a JSON list of sample objects, got {type(records).__name__}"
    if problem:
        report.errors.append(Problem(str(path), "-", "-", problem))
        return None
    return records


def _named_files(rec: Any, root: Path) -> list[Path]:
    """Every media path a sample names (all views of a view dict), for the cache key only."""
    if not isinstance(rec, dict):
        return []
    out = []
    for kind in ("video", "image", "audio"):
        value = rec.get(kind)
        for v in value if isinstance(value, list) else [value]:
            for p in v.values() if isinstance(v, dict) else [v]:
                if isinstance(p, str) and p:
                    out.append(root / p)
    return out


def _validate_split(name: str, path: Path, cfg: Config, data_cfg: DataConfig, tools: _Tools, decode: bool,
                    use_cache: bool, progress: bool, workers: int) -> SplitReport:
    start = time.perf_counter()
    report = SplitReport(name, str(path), decoded=decode)
    file = str(path)
    records = _read(path, report)
    if records is None:
        return report
    root = Path(data_cfg.media_root) if data_cfg.media_root else path.parent

    key = ""
    if use_cache:
        settings = _settings(cfg, data_cfg, name == cfg.eval.split, decode)
        named = sorted({str(p) for rec in records for p in _named_files(rec, root)})
        settings.update(file_sha256=file_sha256(path), media=[[p, _stat(Path(p))] for p in named])
        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
        hit = _cache_read(cache_path(path)).get("entries", {}).get(key)
        if hit:
            cached = SplitReport.from_dict(hit["report"])
            cached.split, cached.cached = name, True
            cached.seconds = time.perf_counter() - start
            return cached

    labels = list(cfg.eval.labels)
    checked = [check_sample(rec, i, data_cfg, file, root, labels) for i, rec in enumerate(records)]
    media = {(kind, p) for c in checked for _, kind, p in c.refs}
    report.samples, report.media_files = len(records), len(media)
    seen_ids: dict[str, int] = {}
    # (kind, media file, video segment) -> (sample, field) using it
    users: dict[tuple[str, Path, Optional[tuple[float, float]]], list[tuple[str, str]]] = {}
    task = cfg.eval.task if name == cfg.eval.split else None
    tokenizer = tokens = None
    if any(c.turns is not None for c in checked):  # built outside the loop: a build error is not a sample's
        tokenizer, tokens = tools.tokenizer, tools.placeholder_tokens
    for i, (rec, c) in enumerate(tqdm(list(zip(records, checked)), desc=f"validate {name}", unit="sample",
                                      disable=not progress, file=sys.stderr)):
        report.errors += c.errors + c.metadata  # validate checks evaluation's fields too
        if c.sid in seen_ids:
            report.warnings.append(Problem(file, c.sid, "id", f"repeats the id of sample #{seen_ids[c.sid]}"))
        seen_ids.setdefault(c.sid, i)
        if not isinstance(rec, dict):
            continue
        for fld, it in c.media:
            for p in it.paths:
                users.setdefault((it.kind, p, it.segment), []).append((c.sid, fld))
        for counted, counts in (("label", report.labels), ("scenario", report.scenarios)):
            if isinstance(rec.get(counted), str):
                counts[rec[counted]] = counts.get(rec[counted], 0) + 1
        errors, warnings = eval_task_problems(rec, c.sid, task, name, data_cfg.format, file)
        report.errors += errors
        report.warnings += warnings
        if c.turns is None:
            continue
        tok, problem = tokenize_sample(c, data_cfg.format, file, tokenizer, llm_template(cfg.model.llm), tokens,
                                       cfg.model.llm.max_length)
        if tok is not None:
            report.max_tokens = max(report.max_tokens, len(tok["input_ids"]))
        if problem is not None:
            report.errors.append(problem)
            if tok is not None:  # tokenized, yet refused: too long
                report.over_length += 1

    def check(use: tuple[str, Path, Optional[tuple[float, float]]]) -> Optional[str]:
        kind, p, segment = use
        if not p.is_file():
            return f"media file not found: {p}"
        return _decode(kind, p, data_cfg, segment) if decode else None

    todo = list(users)
    bar = tqdm(total=len(todo), desc=f"decode {name}" if decode else f"find {name}", unit="file",
               disable=not progress or not todo, file=sys.stderr)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for kp, problem in zip(todo, pool.map(check, todo)):
            bar.update()
            if problem:
                (sid, fld), n = users[kp][0], len(users[kp]) - 1
                also = f" (also used by {n} more sample(s))" if n else ""
                report.errors.append(Problem(file, sid, fld, problem + also))
    bar.close()
    report.errors.sort(key=lambda p: seen_ids.get(p.sample, -1))  # in file order (stable within a sample)
    report.warnings.sort(key=lambda p: seen_ids.get(p.sample, -1))
    report.seconds = time.perf_counter() - start
    if use_cache:
        _cache_write(cache_path(path), key, report)
    return report


def _split_files(cfg: Config, split: str) -> list[tuple[str, Optional[str], DataConfig]]:
    """(report name, file, data config) for a split: data.<split>, or the catalog datasets of data.mixture."""
    if split == "train" and cfg.data.mixture:
        from skillgpt.data.mixture import load_catalog

        if not cfg.data.catalog:
            raise ValueError("data.mixture needs data.catalog (the YAML file that names the datasets)")
        catalog = load_catalog(cfg.data.catalog)
        out = []
        for name in cfg.data.mixture:
            if name not in catalog:
                raise ValueError(f"data.mixture.{name}: no such dataset in {cfg.data.catalog} (has {sorted(catalog)})")
            entry = catalog[name]
            out.append((f"train:{name}", entry.train,
                        dataclasses.replace(cfg.data, format=entry.format, media_root=entry.media_root)))
        return out
    path = getattr(cfg.data, split)
    return [(split, path if path and path != "???" else None, cfg.data)]


def validate_config(cfg: Config, splits: str | Iterable[str] = SPLITS, *, tokenizer: Any = None,
                    placeholder_tokens: Optional[dict[str, int]] = None, decode: bool = True,
                    use_cache: bool = True, progress: bool = True, workers: int = 1) -> ValidationReport:
    """Validate the config's data splits (see the module docstring); never raises for bad data.

    Pass `tokenizer` and `placeholder_tokens` (``model.placeholder_tokens()``) when they exist already;
    otherwise they are made on first need (token counts by layout arithmetic from the config, no model).
    Unchanged splits come from
    the cache. `workers` threads check media files."""
    names = [s.strip() for s in (splits.split(",") if isinstance(splits, str) else splits) if s.strip()]
    unknown = [s for s in names if s not in SPLITS]
    if unknown:
        raise ValueError(f"--splits: unknown split(s) {unknown}; expected some of {list(SPLITS)}")
    tools = _Tools(cfg, tokenizer, dict(placeholder_tokens) if placeholder_tokens else None)
    report = ValidationReport()
    for split in names:
        for name, file, data_cfg in _split_files(cfg, split):
            if not file:
                report.not_set.append(name)
                continue
            report.splits.append(_validate_split(name, Path(file), cfg, data_cfg, tools, decode, use_cache,
                                                 progress, workers))
    return report
