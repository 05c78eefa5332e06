"""The `skillgpt` command: parses arguments and dispatches. Nothing imports this module."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from skillgpt.console import DEEPSPEED_COMMANDS, NoiseFilteredStream, needs_bitsandbytes, quiet_libraries


def _make_sample_data(args: argparse.Namespace) -> None:
    from skillgpt.data.synthetic import make_sample_data

    per_level = {k: int(v) for k, v in (item.split("=") for item in args.per_level.split(","))}
    views = args.views.split(",") if args.views else None
    summary = make_sample_data(args.out, seed=args.seed, per_level=per_level, workers=args.workers, views=views)
    print(json.dumps(summary, indent=2))


def _make_tiny_llm(args: argparse.Namespace) -> None:
    from skillgpt.data.dataset import read_samples, to_conversation
    from skillgpt.data.templates import get_template, render
    from skillgpt.models.tiny import build_tiny_llm, train_bpe_tokenizer

    turns: list[list[dict[str, str]]] = []  # training splits only: nothing from val/test is seen
    for path in sorted(Path(args.data).glob("*_train.json")):
        fmt = "caption" if path.name.startswith("captions") else "conversation"
        for i, rec in enumerate(read_samples(path)):
            turns.append(to_conversation(rec, fmt, ["<video> Describe this video."], i))
    if not turns:
        raise FileNotFoundError(f"{args.data}: no *_train.json files (run `skillgpt make-sample-data` first)")
    texts = [t["value"] for conv in turns for t in conv]
    # Render samples through every template so separators such as "### Human:" become tokens.
    plain = train_bpe_tokenizer(texts, vocab_size=256)
    for name in ("vicuna_v0", "vicuna_v1", "llama2"):
        texts.append(render(get_template(name), [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}], plain)[0])
    # Text-only pretraining corpus: the training conversations in the tiny preset's template, no video.
    template = get_template(args.template)
    corpus = [render(template, [{**t, "value": t["value"].replace("<video>", "").strip()} for t in conv], plain)[0]
              for conv in turns]
    out = build_tiny_llm(args.out, texts * 2, vocab_size=args.vocab_size, seed=args.seed,
                         pretrain_texts=corpus, pretrain_steps=args.pretrain_steps)
    print(f"tiny LLM written to {out}")


def _train(args: argparse.Namespace) -> None:
    from skillgpt.config import load_config

    cfg = load_config(args.config, args.overrides)  # light: typos and bad values fail before torch loads
    _check_parent_run(cfg.train.init_from)
    from skillgpt.train.loop import train

    ckpt = train(cfg)
    print(f"checkpoint: {ckpt}")
    from skillgpt.distributed import close_distributed

    close_distributed()


def _check_parent_run(init_from: str | None) -> None:
    """`train.init_from` must hold a complete checkpoint (a stage 2 run needs its stage 1 run)."""
    if not init_from:
        return
    parent = Path(init_from)
    complete = (parent / "COMPLETE").is_file() or any(parent.glob("checkpoint-*/COMPLETE"))
    if not complete:
        state = "does not exist" if not parent.exists() else "holds no complete checkpoint"
        raise ValueError(f"train.init_from: {parent} {state}; run stage 1 first (scripts/train.sh 1 ...) "
                         "or point train.init_from at its run folder")


def _eval(args: argparse.Namespace) -> None:
    from skillgpt.eval.run import evaluate

    from skillgpt.checkpoint.flags import location_overrides

    evaluate(args.ckpt, split=args.split, out_dir=args.out, limit=args.limit, generate=not args.no_generate,
             overrides=location_overrides(args) + args.overrides, motion_free=not args.no_motion_free)


def _cache_caption_embeddings(args: argparse.Namespace) -> None:
    from skillgpt.generation.caption_cache import run_cache_command

    run_cache_command(args)


def _cache_features(args: argparse.Namespace) -> None:
    import torch

    from skillgpt.config import load_config
    from skillgpt.data.cached_features import fill_cache
    from skillgpt.data.dataset import SkillDataset
    from skillgpt.data.templates import llm_template
    from skillgpt.models.build import build_model

    cfg = load_config(args.config, args.overrides)
    if not cfg.data.feature_cache:
        raise ValueError("data.feature_cache: set the cache folder (in the config or as data.feature_cache=DIR)")
    model, tokenizer = build_model(cfg)
    items = []
    for split in args.splits.split(","):
        path = getattr(cfg.data, split, None)
        if path:
            ds = SkillDataset(path, cfg.data, tokenizer, llm_template(cfg.model.llm), model.placeholder_tokens(),
                              cfg.model.llm.max_length)
            items += ds.media_items()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cache = fill_cache(cfg, model, items, batch_size=args.batch_size, device=device)
    print(f"feature cache: {cache.dir} ({len(cache)} entries)")


class _HelpFormatter(argparse.HelpFormatter):
    """Every described option ends with its default, unless its text already names one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if ("default" in text.lower() or action.default is argparse.SUPPRESS or not action.option_strings
                or action.required):
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._VersionAction, argparse._HelpAction)):
            return text + (" (default: off)" if isinstance(action, argparse._StoreTrueAction) else "")
        default = "none" if action.default in (None, []) else "%(default)s"
        return f"{text} (default: {default})".strip()


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `skillgpt infer: error: ... (see skillgpt infer --help)`, exit status 2."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skillgpt")
    except PackageNotFoundError:  # run from the source tree without `pip install -e .`
        return "unknown (not installed)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `skillgpt` parser; given the `command` about to run, commands defined in heavy modules (torch,
    peft) are left out when `command` is not one of them."""
    from skillgpt.checkpoint.flags import add_location_flags
    from skillgpt.inference.commands import add_infer_command

    parser = _Parser(prog="skillgpt", description="Video-language models that judge human skill.",
                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"skillgpt {_version()}")
    # launchers that put --local_rank before the subcommand (scripts/train.sh passes --no_local_rank)
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("make-sample-data", help="render the synthetic skill dataset (mp4 + JSON)")
    p.add_argument("--out", default="data/synthetic", help="output folder (videos/ and the JSON files)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the rendered performances")
    p.add_argument("--per-level", default="train=100,val=10,test=25", help="videos per level and split")
    p.add_argument("--workers", type=int, default=2, help="processes rendering videos")
    p.add_argument("--views", default=None,
                   help="also film each performance from static extra cameras, e.g. ego,exo1,exo2 (first = main video)")
    p.set_defaults(func=_make_sample_data)

    p = sub.add_parser("make-tiny-llm", help="build the tiny preset's LLM + BPE tokenizer from sample data")
    p.add_argument("--data", default="data/synthetic", help="sample data folder (its *_train.json files)")
    p.add_argument("--out", default="ckpt/pretrained/tiny-llm", help="output folder of the LLM and tokenizer")
    p.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary size")
    p.add_argument("--template", default="vicuna_v0", help="template of the text-only pretraining corpus")
    p.add_argument("--pretrain-steps", type=int, default=200, help="LM pretraining steps on the training text")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights and pretraining")
    p.set_defaults(func=_make_tiny_llm)

    p = sub.add_parser("train", help="run one stage: skillgpt train config/stage_1.yaml [key=value ...]")
    p.add_argument("config", help="stage config, e.g. config/stage_1.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. preset=tiny train.lr=3e-4")
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by the deepspeed launcher
    p.set_defaults(func=_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a split")
    p.add_argument("--ckpt", required=True, help="checkpoint folder or run folder (newest checkpoint)")
    p.add_argument("--split", default=None, help="train | val | test (default: eval.split)")
    p.add_argument("--out", default=None, help="results folder (default: CKPT/eval/<split>-<data file>-<settings "
                   "hash>, one per data file and settings)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples (default: all)")
    p.add_argument("--no-generate", action="store_true", help="skip free-text generation (likelihood only)")
    p.add_argument("--no-motion-free", action="store_true", help="skip the motion-free baseline (every sample "
                   "scored again with one repeated frame per clip; default: scored)")
    p.add_argument("overrides", nargs="*", help="key=value changes to the checkpoint's config, e.g. data.test=FILE "
                   "eval.views=[ego,exo1,exo2] eval.view_groups.Exo=[exo1,exo2]")
    add_location_flags(p, generic=False)
    p.set_defaults(func=_eval)

    add_infer_command(sub)

    p = sub.add_parser("cache-features", help="run the frozen encoders once over a dataset and store the features")
    p.add_argument("--config", required=True, help="stage config whose data and encoders to use")
    p.add_argument("--splits", default="train,val,test", help="comma-separated data.<split> files to cover")
    p.add_argument("--batch-size", type=int, default=8, help="clips per encoder call")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when present, else cpu)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. data.feature_cache=DIR")
    p.set_defaults(func=_cache_features)

    p = sub.add_parser("cache-caption-embeddings",
                       help="encode a T-X dataset's captions once with a diffusion decoder's own text encoder")
    p.add_argument("--data", required=True, help="T-X pair JSON (records with a caption field, or LLaVA conversations)")
    p.add_argument("--decoder", required=True, help="local diffusers pipeline folder (with text_encoder/ and tokenizer/)")
    p.add_argument("--modality", required=True, choices=["image", "video", "audio"], help="what the decoder makes")
    p.add_argument("--out", required=True, help="cache folder (an existing one is resumed)")
    p.add_argument("--batch-size", type=int, default=16, help="captions per text-encoder call (default: 16)")
    p.add_argument("--shard-size", type=int, default=1024, help="captions per safetensors shard (default: 1024)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when present, else cpu)")
    p.set_defaults(func=_cache_caption_embeddings)

    from skillgpt.serve.commands import add_serve_commands  # demo, chat

    add_serve_commands(sub)
    if command not in sub.choices:  # the modules below import torch/peft: only when their command runs
        from skillgpt.data.commands import add_data_commands
        add_data_commands(sub)
        from skillgpt.checkpoint.export import add_export_command  # export
        add_export_command(sub)
        from skillgpt.checkpoint.importers import add_import_command  # import-weights
        add_import_command(sub)
    for command in sub.choices.values():
        command.formatter_class = _HelpFormatter
        command.add_argument("--verbose", action="store_true",
                             help="also show third-party library messages (bitsandbytes, DeepSpeed, CUDA probes)")
    return parser


def _run(args: argparse.Namespace) -> None:
    check = getattr(args, "check", None)
    if getattr(args, "device", None) is not None:
        from skillgpt.inference.inputs import check_device_name

        check_device_name(args.device)
    if getattr(args, "ckpt", None) is not None and not Path(args.ckpt).exists():
        raise FileNotFoundError(f"--ckpt {args.ckpt}: not found (expected a checkpoint or run folder)")
    if check:
        check(args)  # arguments and paths, before torch/transformers load
    quiet_libraries(args.verbose)
    args.func(args)


def main(argv: list[str] | None = None) -> int:
    """Run `skillgpt ARGS`; returns the exit status (2 with one error line on stderr for bad input).

    Run as the process's own command (`argv` None) without a quantized model, bitsandbytes is kept out:
    importing it costs seconds and prints warnings about CPU kernels."""
    args = build_parser(_command_of(sys.argv[1:] if argv is None else argv)).parse_args(argv)
    stdout = sys.stdout
    try:
        if argv is None and not args.verbose and "bitsandbytes" not in sys.modules and not needs_bitsandbytes(args):
            sys.modules["bitsandbytes"] = None  # type: ignore[assignment]  # import fails: peft skips it
        if not args.verbose and args.command in DEEPSPEED_COMMANDS:  # not chat's console (line editing)
            sys.stdout = NoiseFilteredStream(stdout)  # type: ignore[assignment]
        _run(args)
    except (OSError, ValueError, KeyError, FloatingPointError, MemoryError) as err:
        print(f"skillgpt {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    finally:
        if sys.stdout is not stdout:
            sys.stdout.flush()
            sys.stdout = stdout
    return 0


def _command_of(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is not an option or the --local_rank value)."""
    words = iter(argv)
    for word in words:
        if word == "--local_rank":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])
    return " ".join(text.split()) if "\n" not in text.strip() else text


if __name__ == "__main__":
    sys.exit(main())
