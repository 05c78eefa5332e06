"""The `skillgpt` command's console: third-party start-up noise hidden unless --verbose, and bitsandbytes
kept out of processes that load no quantized model. Standard library only at import time."""
from __future__ import annotations

import argparse
import io
import logging
import re
from pathlib import Path
from typing import TextIO

NOISE_LOGGERS = ("bitsandbytes", "torch.utils.cpp_extension")
DEEPSPEED_COMMANDS = ("train", "cache-features")  # the commands that start torch.distributed via DeepSpeed
NOISE_LINES = re.compile(r"^DeepSpeed \S+ built successfully$")  # printed by deepspeed.comm on start-up


class _DropBelowError(logging.Filter):
    """DeepSpeed resets its logger's level on import; a filter survives that."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


_DEEPSPEED_FILTER = _DropBelowError()


class NoiseFilteredStream(io.TextIOBase):
    """A text stream that passes everything but known third-party start-up lines (NOISE_LINES)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if not NOISE_LINES.match(line.strip()):
                self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.pending and not NOISE_LINES.match(self.pending.strip()):
            self.stream.write(self.pending)
            self.pending = ""
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()


def quiet_libraries(verbose: bool) -> None:
    """Keep the terminal for SkillGPT's own output: library warnings (bitsandbytes' missing CPU kernels,
    DeepSpeed's accelerator probe, torch's CUDA probe) only with --verbose; never per-load weight bars."""
    import warnings

    for name in NOISE_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)
    ds_logger = logging.getLogger("DeepSpeed")
    (ds_logger.removeFilter if verbose else ds_logger.addFilter)(_DEEPSPEED_FILTER)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def needs_bitsandbytes(args: argparse.Namespace) -> bool:
    """Whether this command may load a quantized LLM (bitsandbytes is imported by peft only when installed
    and not blocked; it costs seconds and prints CPU-kernel warnings)."""
    if args.command == "train":
        from skillgpt.config import load_config

        return bool(load_config(args.config, args.overrides).model.llm.quantization)
    ckpt = getattr(args, "ckpt", None)
    if ckpt is None:
        return args.command not in ("make-sample-data", "make-tiny-llm", "prepare-data")
    import yaml

    for path in [Path(ckpt), *Path(ckpt).glob("checkpoint-*")]:  # run or checkpoint folder: its config
        config = path / "config.yaml"
        if config.is_file():
            text = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
            if ((text.get("model") or {}).get("llm") or {}).get("quantization"):
                return True
    return any(f.startswith("model.llm.quantization=") and not f.endswith(("=null", "=None"))
               for f in getattr(args, "set", None) or [])
