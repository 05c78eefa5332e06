"""`skillgpt demo` and `skillgpt chat`: argument parsing for the serving commands."""
from __future__ import annotations

import argparse


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    """Register the serving subcommands on the `skillgpt` parser."""
