"""Command-line flags that say where a checkpoint's inputs are now (see skillgpt.checkpoint.lineage).

Kept free of torch imports so that `skillgpt --help` stays fast."""
from __future__ import annotations

import argparse
import json


def add_location_flags(parser: argparse.ArgumentParser, generic: bool = True) -> None:
    """`--base-llm`, `--init-from` (and with `generic`, `--set KEY=VALUE`) for commands that load a checkpoint."""
    parser.add_argument("--base-llm", default=None, metavar="PATH",
                        help="base model folder, when it is no longer where the checkpoint recorded it (model.llm.path)")
    parser.add_argument("--init-from", default=None, metavar="PATH",
                        help="the parent checkpoint's new place (or a run folder holding it), when it moved")
    parser.add_argument("--system", default=None, metavar="TEXT",
                        help="system prompt for conversations without one (model.llm.system_prompt; \"\" for none; "
                        "default: the checkpoint's, else the template's)")
    if generic:
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="change a setting of the checkpoint's config, e.g. model.encoder.checkpoint=PATH")


def location_overrides(args: argparse.Namespace) -> list[str]:
    """The key=value overrides the location flags of `add_location_flags` stand for."""
    out = [f"model.llm.path={args.base_llm}"] if args.base_llm else []
    out += [f"train.init_from={args.init_from}"] if args.init_from else []
    if getattr(args, "system", None) is not None:  # a JSON string is a YAML string: any text survives
        out.append(f"model.llm.system_prompt={json.dumps(args.system)}")
    return out + list(getattr(args, "set", None) or [])
