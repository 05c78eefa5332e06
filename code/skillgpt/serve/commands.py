"""`skillgpt demo` and `skillgpt chat`: argument parsing for the serving commands.

Gradio and the model are imported inside the command functions only, so `skillgpt --help` stays fast.
"""
from __future__ import annotations

import argparse

DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda when present, else cpu)"


def _demo(args: argparse.Namespace) -> None:
    from skillgpt.serve.demo import main

    main(args)


def _check_demo(args: argparse.Namespace) -> None:
    """A busy port or unknown host is an error before gradio and the model load (exit status 2)."""
    from skillgpt.serve.access import DEFAULT_HOST, DEFAULT_PORT, check_port_free

    port = DEFAULT_PORT if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {port}")
    check_port_free(args.host or DEFAULT_HOST, port)


def _chat(args: argparse.Namespace) -> None:
    from skillgpt.serve.chat import run_chat

    from skillgpt.checkpoint.flags import location_overrides
    from skillgpt.inference.inputs import media_overrides

    media, flags = media_overrides(args)
    status = run_chat(args.ckpt, args.video, device=args.device, max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                      overrides=location_overrides(args) + media, media_flags=flags)
    if status:
        raise SystemExit(status)


def _check_chat(args: argparse.Namespace) -> None:
    """A --video that cannot be a clip is an error before the model loads (exit status 2)."""
    if args.video:
        from skillgpt.inference.inputs import check_media_file

        check_media_file(args.video, "--video")


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    """Register the serving subcommands on the `skillgpt` parser."""
    from skillgpt.checkpoint.flags import add_location_flags
    from skillgpt.inference.inputs import add_media_flags, add_sampling_flags

    # Defaults of `demo` live in skillgpt.serve.demo.ServeConfig (None here = keep that default); the
    # help texts state them without importing gradio.
    p = sub.add_parser("demo", help="serve a Gradio web demo: skill rating, coaching feedback, chat about a clip")
    p.add_argument("--ckpt", required=True, help="checkpoint folder or run folder (newest checkpoint)")
    p.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860)")
    p.add_argument("--share", action="store_true", default=None,
                   help="also create a public gradio.live link (off by default)")
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                   help="require this login (Gradio's login page; default: no login). Note: visible in the process list")
    p.add_argument("--concurrency", type=int, default=None,
                   help="requests processed at once per action; others wait in the queue (default 2)")
    p.add_argument("--max-upload-mb", type=float, default=None, help="largest accepted upload (default 50)")
    p.add_argument("--max-duration-s", type=float, default=None, help="longest accepted clip (default 300)")
    p.add_argument("--examples", default=None,
                   help="folder of example clips (default: the videos of the checkpoint's data.test, if present)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="initial max-new-tokens setting (default 128)")
    p.add_argument("--feedback-question", default=None,
                   help="second question after rating, its answer fills the feedback box "
                        "(default: 'What should this athlete improve?')")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    add_media_flags(p)
    add_location_flags(p)
    p.set_defaults(func=_demo, check=_check_demo)

    p = sub.add_parser("chat", help="chat about a clip in the terminal (/video PATH, /rate, /reset, /quit)")
    p.add_argument("--ckpt", required=True, help="checkpoint folder or run folder (newest checkpoint)")
    p.add_argument("--video", default=None, help="clip to start with (default: none; load one with /video PATH)")
    add_sampling_flags(p, max_new_tokens=128)
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    add_media_flags(p)
    add_location_flags(p)
    p.set_defaults(func=_chat, check=_check_chat)
