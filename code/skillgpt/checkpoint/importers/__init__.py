"""Import checkpoints of other systems (PandaGPT, NExT-GPT, LLaVA, MiniGPT-4/v2, VideoGPT+) as SkillGPT checkpoints.

Each importer reads the original file without executing pickled code and writes, through
`skillgpt.checkpoint.importers.common.write_checkpoint`, a normal run folder (``RUN/checkpoint-0``) that
`infer`, `chat`, `demo`, `eval` and `train.init_from` accept. Importers load lazily: ``IMPORTERS`` maps a
system name to ``"module:function"`` with the signature
``import_x(src: Path, out: Path, base_llm: Path | None, **options) -> Path`` (the run folder written).
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

IMPORTERS: dict[str, str] = {
    "pandagpt": "skillgpt.checkpoint.importers.pandagpt:import_pandagpt",
    "nextgpt": "skillgpt.checkpoint.importers.nextgpt:import_nextgpt",
    "llava": "skillgpt.checkpoint.importers.llava:import_llava",
    "minigpt4": "skillgpt.checkpoint.importers.minigpt:import_minigpt4",
    "minigpt_v2": "skillgpt.checkpoint.importers.minigpt:import_minigpt_v2",
    "videogpt_plus": "skillgpt.checkpoint.importers.videogpt_plus:import_videogpt_plus",
}


def importer(system: str) -> Callable[..., Path]:
    """The import function of `system` (ValueError naming the known systems otherwise)."""
    if system not in IMPORTERS:
        raise ValueError(f"--from: unknown system {system!r}; expected one of {', '.join(sorted(IMPORTERS))}")
    module, function = IMPORTERS[system].split(":")
    return getattr(importlib.import_module(module), function)


def run_import(system: str, src: str | Path, out: str | Path, base_llm: str | Path | None = None,
               **options: Any) -> Path:
    """Import `src` (a file or folder of `system`) into the SkillGPT run folder `out`; returns it."""
    src_path = Path(src)
    if not src_path.exists():
        raise FileNotFoundError(f"{src_path}: not found (the {system} checkpoint to import)")
    return importer(system)(src_path, Path(out), Path(base_llm) if base_llm else None, **options)


def _import_weights(args: Any) -> None:
    from skillgpt.config import parse_overrides

    settings = dict(parse_overrides(args.set))
    options: dict[str, Any] = {"settings": settings}
    if args.encoder:
        options["encoder"] = str(Path(args.encoder).absolute())
    if args.context_encoder:
        options["context_encoder"] = str(Path(args.context_encoder).absolute())
    run = run_import(args.system, args.src, args.out, args.base_llm, **options)
    print(f"imported {args.system} {args.src} -> {run} (use it as --ckpt {run} or train.init_from={run})")


def add_import_command(sub: Any) -> None:
    """`skillgpt import-weights --from SYSTEM SRC [--base-llm DIR] [--encoder PATH] [--set K=V] --out RUN`."""
    p = sub.add_parser("import-weights", help="turn another system's released weights into a SkillGPT checkpoint")
    p.add_argument("--from", dest="system", required=True, choices=sorted(IMPORTERS), help="the system SRC comes from")
    p.add_argument("src", help="its checkpoint file or folder (e.g. PandaGPT's pytorch_model.pt)")
    p.add_argument("--base-llm", default=None, metavar="DIR", help="the base LLM folder (Hugging Face format) it was trained on (default: none; "
                   "required by delta checkpoints)")
    p.add_argument("--encoder", default=None, metavar="PATH", help="the encoder weights it uses, e.g. imagebind_huge.pth "
                   "(default: none, set model.encoder.checkpoint later)")
    p.add_argument("--context-encoder", default=None, metavar="DIR", help="the second encoder of a dual-encoder "
                   "system, e.g. VideoGPT+'s CLIP ViT-L/14-336 folder (default: none)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a setting of the written config.yaml, e.g. model.llm.dtype=bfloat16 "
                   "(repeatable; default: the system's settings)")
    p.add_argument("--out", required=True, metavar="RUN", help="run folder to write (RUN/checkpoint-0)")
    p.set_defaults(func=_import_weights)
