"""`skillgpt prepare-data FORMAT`: public skill / video-language annotation files -> SkillGPT JSON.

``CONVERTERS`` maps each format to its converter, ``convert(input_path, ctx, **options) -> Conversion``
(one small module per format; the module docstrings give the exact input shapes). ``prepare_data`` runs
one: it reads the input, converts, checks every sample against SkillGPT's dataset checks and writes
the output JSON atomically. Options a converter does not take are refused by name.
"""
from __future__ import annotations

import inspect
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional

from skillgpt.data.convert import (
    captions, egoexo4d_proficiency, egoexo4d_tips, finediving, llava, mtl_aqa, mvbench, nextgpt, seeds,
)
from skillgpt.data.convert._common import Context, Conversion, ConversionError, check_samples, error_list

CONVERTERS: dict[str, Callable[..., Conversion]] = {
    "egoexo4d-proficiency": egoexo4d_proficiency.convert,
    "egoexo4d-tips": egoexo4d_tips.convert,
    "finediving": finediving.convert,
    "mtl-aqa": mtl_aqa.convert,
    "captions": captions.convert,
    "llava": llava.convert,
    "mvbench": mvbench.convert,
    "pandagpt": seeds.convert_pandagpt,
    "minigpt4-align": seeds.convert_minigpt4,
    "video-chatgpt": seeds.convert_video_chatgpt,
    "llava-pretrain": seeds.convert_llava_pretrain,
    "nextgpt-tx2t": nextgpt.convert_tx2t,
    "nextgpt-t2xt": nextgpt.convert_t2xt,
    "nextgpt-mosit": nextgpt.convert_mosit,
}

__all__ = ["CONVERTERS", "Conversion", "ConversionError", "converter_options", "prepare_data"]


def converter_options(name: str) -> list[str]:
    """The keyword options a converter takes (``views``, ``video_pattern``, ...)."""
    params = inspect.signature(CONVERTERS[name]).parameters.values()
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]


def _flag(option: str) -> str:
    return "--as" if option == "as_format" else "--" + option.replace("_", "-")


def prepare_data(fmt: str, input_path: str | os.PathLike, out: str | os.PathLike,
                 media_root: Optional[str | os.PathLike] = None, **options: Any) -> Conversion:
    """Convert `input_path` with the `fmt` converter and write `out`; returns the Conversion.

    `options` that are None or False are left at the converter's defaults."""
    if fmt not in CONVERTERS:
        raise ConversionError(f"unknown format {fmt!r}; known: {', '.join(sorted(CONVERTERS))}")
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    allowed = converter_options(fmt)
    refused = [k for k in given if k not in allowed]
    if refused:
        takes = ", ".join(_flag(o) for o in allowed) or "no format options"
        raise ConversionError(f"prepare-data {fmt}: {', '.join(_flag(k) for k in refused)} does not apply "
                              f"(it takes {takes})")
    input_path, out = Path(input_path), Path(out)
    if media_root is not None and not Path(media_root).is_dir():
        raise ConversionError(f"--media-root: {media_root} is not a folder")
    if out.resolve() == input_path.resolve():
        raise ConversionError(f"--out {out} would overwrite the input")
    ctx = Context(input_path, Path(media_root) if media_root else None, out)
    result = CONVERTERS[fmt](input_path, ctx, **given)
    if not result.samples:
        raise ConversionError(error_list(f"{input_path}: no samples to write ({len(result.skipped)} skipped)",
                                         [f"{s.entry}: {s.reason}" for s in result.skipped]))
    check_samples(result.samples, result.format, out)
    missing = [p for p in dict.fromkeys(ctx.media_files(result.samples)) if not p.is_file()]
    if missing:
        result.notes.append(f"{len(missing)} media file(s) not found yet (e.g. {missing[0]}); "
                            "`skillgpt data validate` checks them before training")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result.samples, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    return result


def summary(fmt: str, out: str | os.PathLike, result: Conversion, limit: int = 5) -> str:
    """Short report: written, skipped by reason (with the first few entries), notes."""
    lines = [f"prepare-data {fmt}: {len(result.samples)} sample(s) written to {out} (data.format: {result.format})"]
    if result.skipped:
        reasons = Counter(s.reason for s in result.skipped)
        lines.append(f"skipped {len(result.skipped)}: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()))
        lines += [f"  {s.entry}: {s.reason}" + (f" ({s.detail})" if s.detail else "") for s in result.skipped[:limit]]
        if len(result.skipped) > limit:
            lines.append(f"  ... and {len(result.skipped) - limit} more")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
