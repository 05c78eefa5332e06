"""The `skillgpt` command: parses arguments and dispatches. Nothing imports this module."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    from skillgpt.train.loop import train

    cfg = load_config(args.config, args.overrides)
    ckpt = train(cfg)
    print(f"checkpoint: {ckpt}")


def _eval(args: argparse.Namespace) -> None:
    from skillgpt.eval.run import evaluate

    from skillgpt.checkpoint.flags import location_overrides

    evaluate(args.ckpt, split=args.split, out_dir=args.out, limit=args.limit, generate=not args.no_generate,
             overrides=location_overrides(args) + args.overrides, motion_free=not args.no_motion_free)


def _infer(args: argparse.Namespace) -> None:
    from skillgpt.checkpoint.flags import location_overrides
    from skillgpt.inference.assistant import SkillAssistant

    assistant = SkillAssistant(args.ckpt, device=args.device, overrides=location_overrides(args))
    record: dict = {}
    if args.video:
        views = [v.split("=", 1) for v in args.video if "=" in v]
        record["video"] = dict(views) if views else args.video
    if args.image:
        record["image"] = args.image
    if args.audio:
        record["audio"] = args.audio
    media = assistant.load(record) if record else None
    gen = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    context: list = []
    if args.self_questions > 0:
        from skillgpt.inference.self_questioning import ask_with_self_questions

        if not media:
            raise ValueError("--self-questions needs media (--video / --image / --audio) to ask about")
        answer, context = ask_with_self_questions(assistant, args.question, media, args.self_questions, **gen)
        if not args.json:
            for turn in context:
                print(f"[self-{'Q' if turn['from'] == 'human' else 'A'}] {turn['value'].strip()}")
    else:
        answer = assistant.ask(args.question, media, **gen)
    if not args.json:
        print(answer)
        return
    out: dict = {"question": args.question, "answer": answer, **({"self_questions": context} if context else {})}
    if media:
        probs = assistant.rate(media)
        out.update(label=max(probs, key=probs.get), probabilities=probs)
    print(json.dumps(out, indent=2))


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


def build_parser() -> argparse.ArgumentParser:
    from skillgpt.checkpoint.flags import add_location_flags

    parser = argparse.ArgumentParser(prog="skillgpt", description="Video-language models that judge human skill.")
    # launchers that put --local_rank before the subcommand (scripts/train.sh passes --no_local_rank)
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-sample-data", help="render the synthetic skill dataset (mp4 + JSON)")
    p.add_argument("--out", default="data/synthetic")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-level", default="train=100,val=10,test=25", help="videos per level and split")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--views", default=None,
                   help="also film each performance from static extra cameras, e.g. ego,exo1,exo2 (first = main video)")
    p.set_defaults(func=_make_sample_data)

    p = sub.add_parser("make-tiny-llm", help="build the tiny preset's LLM + BPE tokenizer from sample data")
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--out", default="ckpt/pretrained/tiny-llm")
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--template", default="vicuna_v0", help="template of the text-only pretraining corpus")
    p.add_argument("--pretrain-steps", type=int, default=200, help="LM pretraining steps on the training text")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_make_tiny_llm)

    p = sub.add_parser("train", help="run one stage: skillgpt train config/stage_1.yaml [key=value ...]")
    p.add_argument("config")
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

    p = sub.add_parser("infer", help="answer a question about a video")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--video", action="append", default=None,
                   help="video file; repeat for several, or VIEW=FILE per view for multi-view models")
    p.add_argument("--image", action="append", default=None, help="image file (repeatable)")
    p.add_argument("--audio", action="append", default=None, help="audio file or video with sound (repeatable)")
    p.add_argument("question")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true", help="print label, level probabilities and answer as JSON")
    p.add_argument("--self-questions", type=int, default=0,
                   help="first ask and answer N questions about the media (needs a vicuna_v1_sq-trained model)")
    add_location_flags(p)
    p.set_defaults(func=_infer)

    p = sub.add_parser("cache-features", help="run the frozen encoders once over a dataset and store the features")
    p.add_argument("--config", required=True)
    p.add_argument("--splits", default="train,val,test", help="comma-separated data.<split> files to cover")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None)
    p.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. data.feature_cache=DIR")
    p.set_defaults(func=_cache_features)

    from skillgpt.serve.commands import add_serve_commands  # demo, chat

    add_serve_commands(sub)
    from skillgpt.data.commands import add_data_commands
    add_data_commands(sub)
    from skillgpt.checkpoint.export import add_export_command  # export
    add_export_command(sub)
    from skillgpt.checkpoint.importers import add_import_command  # import-weights
    add_import_command(sub)
    return parser


def _quiet_libraries() -> None:
    """Keep the terminal for SkillGPT's own progress: no per-load weight bars, no upstream deprecations."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        args.func(args)
    except (OSError, ValueError, KeyError, FloatingPointError, MemoryError) as err:
        print(f"skillgpt {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
