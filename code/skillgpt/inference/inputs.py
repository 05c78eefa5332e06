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


DECODER_FLAGS = {"image": "--image-decoder", "video": "--video-decoder", "audio": "--audio-decoder"}
PIPELINE_OF = {"image": "Stable Diffusion", "video": "text-to-video (ZeroScope)", "audio": "AudioLDM"}


def add_media_flags(parser: argparse.ArgumentParser, media_dir: bool = True) -> None:
    """Flags of media generation (models with signal tokens, docs/generation-decoders.md); each stands for a
    `generation.*` config key of the checkpoint (`media_overrides`), so None means "the config's value"."""
    if media_dir:
        parser.add_argument("--media-dir", default=None, metavar="DIR",
                            help="folder for generated images, videos and audio (generation.media_dir; default: "
                                 "skillgpt-media in the working directory)")
    for modality, flag in DECODER_FLAGS.items():
        parser.add_argument(flag, default=None, metavar="PATH",
                            help=f"local diffusers {PIPELINE_OF[modality]} folder that turns the reply's {modality} "
                                 f"signal tokens into a file (generation.decoders.{modality}.path; default: none, "
                                 f"a reply asking for {modality} is then an error)")
    parser.add_argument("--decoder-steps", type=positive_int, default=None, metavar="N",
                        help="denoising steps of every decoder (generation.decoders.*.steps; default: 50)")
    parser.add_argument("--guidance", type=non_negative_float, default=None, metavar="SCALE",
                        help="classifier-free guidance scale of every decoder, <= 1 turns it off "
                             "(generation.decoders.*.guidance; default: 7.5)")
    parser.add_argument("--decoder-seed", type=int, default=None, metavar="N",
                        help="noise seed of every decoder: the same seed gives the same media "
                             "(generation.decoders.*.seed; default: 0)")


def media_overrides(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(key=value overrides, the flags given) of the `add_media_flags` flags; the flags also name the
    `--set generation.*` values (their overrides come with `location_overrides`)."""
    out: list[str] = []
    flags: list[str] = []
    if getattr(args, "media_dir", None):
        out.append(f"generation.media_dir={json_string(str(Path(args.media_dir).expanduser().absolute()))}")
        flags.append("--media-dir")
    for modality, flag in DECODER_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value:
            out.append(f"generation.decoders.{modality}.path={json_string(str(Path(value).expanduser().absolute()))}")
            flags.append(flag)
    for name, key in (("decoder_steps", "steps"), ("guidance", "guidance"), ("decoder_seed", "seed")):
        value = getattr(args, name, None)
        if value is not None:
            out += [f"generation.decoders.{m}.{key}={value}" for m in DECODER_FLAGS]
            flags.append("--" + name.replace("_", "-"))
    flags += [f"--set {s.split('=')[0]}" for s in (getattr(args, "set", None) or []) if s.startswith("generation.")]
    return out, flags


def json_string(text: str) -> str:
    """`text` as an override value that stays a string (a JSON string is a YAML string)."""
    import json

    return json.dumps(text)
