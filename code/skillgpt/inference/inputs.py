"""Command-line inputs checked before any heavy import: `--device` names (their availability once torch is
loaded) and media files (present, a file, not text)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_NAME = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")
VIEW_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def split_view(value: str) -> tuple[str | None, str]:
    """A ``--video`` value as ``(view, path)``: ``VIEW=FILE`` names a view when VIEW is a plain name
    (letters, digits, ``_.-``) and `value` itself is not an existing file; otherwise the whole value is
    the path (``clips/a=b.mp4`` or ``a=b.mp4`` that exists stays one path)."""
    view, sep, path = value.partition("=")
    if not sep or not VIEW_NAME.match(view) or not path or Path(value).expanduser().exists():
        return None, value
    return view, path


def video_values(values: list[str]) -> list[str] | dict[str, str]:
    """Repeated ``--video`` values as a list of files, or a view -> file dict when every value names a view;
    ValueError when views and plain files are mixed or a view repeats."""
    pairs = [split_view(v) for v in values]
    named = [view for view, _ in pairs if view is not None]
    if not named:
        return [path for _, path in pairs]
    if len(named) != len(pairs):
        plain = next(v for (view, _), v in zip(pairs, values) if view is None)
        raise ValueError(f"--video {plain}: give every view as VIEW=FILE (others are {', '.join(named)}) "
                         "or no view names at all")
    if len(set(named)) != len(named):
        raise ValueError(f"--video: view {next(v for v in named if named.count(v) > 1)!r} is given twice")
    return {view: path for view, path in pairs}  # type: ignore[misc]


def check_device_name(name: str | None) -> None:
    """ValueError unless `name` is None (automatic), cpu, mps, cuda or cuda:N."""
    if name is not None and not DEVICE_NAME.match(name):
        raise ValueError(f"--device {name}: unknown device (expected cpu, cuda, cuda:N or mps)")


def resolve_device(name: str | None) -> "torch.device":
    """The torch device for `name` (None: CUDA when present, else the CPU); ValueError when it is absent."""
    import torch

    check_device_name(name)
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {name}: no CUDA GPU is available here (use --device cpu)")
        if (device.index or 0) >= count:
            raise ValueError(f"--device {name}: only {count} CUDA GPU(s) here (cuda:0 to cuda:{count - 1})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: Apple's MPS backend is not available here (use --device cpu)")
    return device


def check_media_file(path: str | Path, flag: str = "--video") -> Path:
    """`path` when it is a non-empty file that is not plain text; ValueError naming `flag` otherwise."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"{flag} {path}: file not found")
    if p.is_dir():
        raise ValueError(f"{flag} {path}: is a folder (expected a {flag.lstrip('-')} file)")
    with p.open("rb") as fh:
        head = fh.read(4096)
    if not head:
        raise ValueError(f"{flag} {path}: file is empty (expected a {flag.lstrip('-')} file)")
    if looks_like_text(head):
        raise ValueError(f"{flag} {path}: is a text file, not a {flag.lstrip('-')} (expected e.g. an .mp4 file)")
    return p


def looks_like_text(head: bytes) -> bool:
    """Whether the first bytes of a file are UTF-8 text without NUL bytes (media containers have binary headers)."""
    if b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        return err.start >= len(head) - 3  # only a multi-byte character cut at the end
    return True


def _number(text: str, kind: type, ok, expected: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
    return value


def non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: v >= 0, "a number >= 0")


def probability(text: str) -> float:
    return _number(text, float, lambda v: 0 < v <= 1, "a number in (0, 1]")


def positive_int(text: str) -> int:
    return int(_number(text, int, lambda v: v >= 1, "a whole number >= 1"))


def add_sampling_flags(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """--max-new-tokens, --temperature, --top-p and --seed, range-checked while parsing."""
    parser.add_argument("--max-new-tokens", type=positive_int, default=max_new_tokens,
                        help=f"longest answer in tokens (default: {max_new_tokens})")
    parser.add_argument("--temperature", type=non_negative_float, default=0.0,
                        help="sampling temperature, 0 = greedy (default: 0)")
    parser.add_argument("--top-p", type=probability, default=1.0,
                        help="nucleus sampling: keep the smallest token set with this probability, in (0, 1] "
                             "(default: 1.0)")
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed of sampling (temperature > 0): the same seed gives the same answer "
                             "(default: 0)")
