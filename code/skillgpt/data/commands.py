"""`skillgpt prepare-data` and `skillgpt data validate`: argument parsing only.

The converter registry imports only the standard library; the validator (torch, the model) is imported
inside its command function, so `skillgpt --help` stays fast.
"""
from __future__ import annotations

import argparse

from skillgpt.data.convert import CONVERTERS


def _prepare_data(args: argparse.Namespace) -> None:
    from skillgpt.data.convert import prepare_data, summary

    options = {k: getattr(args, k) for k in ("views", "skip_incomplete", "single_view", "question", "kinds",
                                             "multi_turn", "video_pattern", "split_file", "as_format",
                                             "signal_tokens")}
    result = prepare_data(args.format, args.input, args.out, media_root=args.media_root, **options)
    print(summary(args.format, args.out, result))


def _validate(args: argparse.Namespace) -> None:
    from skillgpt.config import load_config
    from skillgpt.data.validate import validate_config

    cfg = load_config(args.config, args.overrides)
    report = validate_config(cfg, args.splits, decode=not args.no_decode, use_cache=not args.no_cache,
                             workers=args.workers)
    print(report.table())
    if report.warnings:
        print(f"{len(report.warnings)} warning(s):")
        for p in report.warnings[: args.max_listed]:
            print(f"  {p}")
        if len(report.warnings) > args.max_listed:
            print(f"  ... and {len(report.warnings) - args.max_listed} more")
    if report.ok:
        print("data OK")
    report.raise_for_errors(limit=args.max_listed)  # exit status 2 with every error listed


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """Register `prepare-data` and `data` (with `validate`) on the `skillgpt` parser."""
    p = sub.add_parser("prepare-data", help="convert public annotations (Ego-Exo4D, FineDiving, MTL-AQA, WebVid, "
                       "LLaVA, VideoChat, MVBench, NExT-GPT) to SkillGPT JSON",
                       description="Convert an annotation file to SkillGPT's training JSON. Input shapes: docs/datasets.md "
                       "and the docstrings in skillgpt/data/convert/.")
    p.add_argument("format", choices=list(CONVERTERS))
    p.add_argument("--input", required=True,
                   help="annotation file (JSON; .pkl for FineDiving/MTL-AQA; .csv for WebVid)")
    p.add_argument("--out", required=True, help="output JSON; media paths are written relative to its folder")
    p.add_argument("--media-root", default=None,
                   help="folder the input's media paths are relative to (default: the input file's folder)")
    g = p.add_argument_group("format options (each format takes some; others are refused)")
    g.add_argument("--views", default=None, help="egoexo4d-*: views to keep, in order, e.g. ego,exo1,exo2,exo3,exo4 "
                   "(default: every view of the take)")
    g.add_argument("--skip-incomplete", action="store_true", help="egoexo4d-*: skip takes without a requested view "
                   "(default: error)")
    g.add_argument("--single-view", action="store_true",
                   help="egoexo4d-*: write 'video' as one path (needs exactly one --views entry)")
    g.add_argument("--kinds", default=None, help="egoexo4d-tips: tips,good (default both)")
    g.add_argument("--multi-turn", action="store_true",
                   help="egoexo4d-tips: one conversation per take (good executions, then tips)")
    g.add_argument("--question", default=None, help="egoexo4d-proficiency, finediving, mtl-aqa, nextgpt-tx2t (pair "
                   "data): the question asked")
    g.add_argument("--video-pattern", default=None,
                   help='finediving, mtl-aqa: clip file from the id (default "{video_id}.mp4"; {0}, {1}: key parts); '
                   'captions (WebVid CSV): from the row (default "{videoid}.mp4")')
    g.add_argument("--split-file", default=None, help="finediving, mtl-aqa: ids to keep (JSON / pickle list or text)")
    g.add_argument("--as", dest="as_format", choices=("caption", "conversation"), default=None,
                   help="captions: write caption pairs (default) or conversations (needed for images)")
    g.add_argument("--signal-tokens", default=None, metavar="image=4,video=24,audio=8",
                   help="nextgpt-t2xt, nextgpt-mosit: signal tokens per generated modality, as model.generation.*_tokens "
                   "(default NExT-GPT's image=4,video=24,audio=8)")
    p.set_defaults(func=_prepare_data)

    p = sub.add_parser("data", help="data tools: `skillgpt data validate --config CONFIG`")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    v = data_sub.add_parser("validate", help="check every sample and media file of a config's splits",
                            description="Check fields, media (exist and decode), placeholder counts, tokenized "
                            "length, labels; print a summary; exit 2 listing each error. Results are cached "
                            "beside each data file (<stem>.validate-cache.json).")
    v.add_argument("--config", required=True, help="stage config, e.g. config/stage_2.yaml")
    v.add_argument("--splits", default="train,val,test", help="comma-separated splits (default train,val,test)")
    v.add_argument("--no-decode", action="store_true", help="only check that media files exist")
    v.add_argument("--no-cache", action="store_true", help="ignore and do not write the result cache")
    v.add_argument("--workers", type=int, default=1, help="threads checking media files")
    v.add_argument("--max-listed", type=int, default=50, help="errors/warnings listed (default 50)")
    v.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. data.train=FILE")
    v.set_defaults(func=_validate)
