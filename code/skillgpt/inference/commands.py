"""The `skillgpt infer` command: its arguments, the checks that run before torch loads, and the run (one
question about the given media, or a folder / list of clips rated with one model load). Imports stay light here:
the parser is built for every `skillgpt` command."""
from __future__ import annotations

import argparse
import json


def _media_record(args: argparse.Namespace) -> dict:
    """The --video/--image/--audio files as a sample-like record (VIEW=FILE values as a view dict)."""
    from skillgpt.inference.inputs import video_values

    record: dict = {}
    if args.video:
        record["video"] = video_values(args.video)
    if args.image:
        record["image"] = args.image
    if args.audio:
        record["audio"] = args.audio
    return record


def _check_infer(args: argparse.Namespace) -> None:
    """Everything `infer` can check without torch: the question, the media files, the batch input/output."""
    from skillgpt.inference.inputs import check_media_file, split_view, video_values

    if args.video:
        video_values(args.video)  # views and plain files not mixed
    for flag in ("video", "image", "audio"):
        for value in getattr(args, flag) or []:
            check_media_file(split_view(value)[1] if flag == "video" else value, f"--{flag}")
    if args.videos:
        from skillgpt.inference.batch import check_out, collect_clips

        if args.video or args.image or args.audio or args.self_questions:
            raise ValueError("--videos rates a list of clips: leave out --video/--image/--audio/--self-questions")
        check_out(args.out)
        args.clips = collect_clips(args.videos)
    elif args.question is None:
        raise ValueError("the question is missing, e.g. skillgpt infer --ckpt RUN --video CLIP.mp4 "
                         "\"What is the proficiency level of this athlete?\" (or --videos DIR --out FILE.jsonl)")
    if args.self_questions and not (args.video or args.image or args.audio):
        raise ValueError("--self-questions needs media (--video / --image / --audio) to ask about")


def _media_assistant(args: argparse.Namespace):
    """The checkpoint's assistant with the location and media flags applied (`--image-decoder` ...: the
    `generation.*` keys); media settings for a model without signal tokens are a one-line error."""
    from skillgpt.checkpoint.flags import location_overrides
    from skillgpt.inference.assistant import SkillAssistant
    from skillgpt.inference.inputs import media_overrides
    from skillgpt.inference.media import check_media_request

    overrides, flags = media_overrides(args)
    assistant = SkillAssistant(args.ckpt, device=args.device, overrides=location_overrides(args) + overrides)
    check_media_request(assistant.model, flags)
    return assistant


def _infer(args: argparse.Namespace) -> None:
    assistant = _media_assistant(args)
    gen = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p)
    if args.temperature > 0:
        import torch

        torch.manual_seed(args.seed)  # sampled answers repeat for the same --seed
    if args.videos:
        from skillgpt.inference.batch import rate_clips, write_rows

        rows = rate_clips(assistant, args.clips, args.question, args.feedback_question or None, **gen)
        done, failed = write_rows(rows, args.out, list(assistant.cfg.eval.labels),
                                  media=bool(assistant.media_modalities))
        print(f"{done} clips rated, {failed} failed: {args.out}")
        return
    record = _media_record(args)
    media = assistant.load(record) if record else None
    context: list = []
    files: list = []
    if assistant.media_modalities:
        gen["files"] = files  # the reply's images / videos / audio, written to generation.media_dir
    if args.self_questions > 0:
        from skillgpt.inference.self_questioning import ask_with_self_questions

        answer, context = ask_with_self_questions(assistant, args.question, media, args.self_questions, **gen)
        if not args.json:
            for turn in context:
                print(f"[self-{'Q' if turn['from'] == 'human' else 'A'}] {turn['value'].strip()}")
    else:
        answer = assistant.ask(args.question, media, **gen)
    if not args.json:
        print(answer)
        for f in files:
            print(f"{f.modality}: {f.path}")
        return
    out: dict = {"question": args.question, "answer": answer, **({"self_questions": context} if context else {})}
    if files:
        out["media"] = [{"modality": f.modality, "path": str(f.path)} for f in files]
    if media:
        probs = assistant.rate(media)
        out.update(label=max(probs, key=probs.get), probabilities=probs)
    print(json.dumps(out, indent=2))


def add_infer_command(sub: argparse._SubParsersAction) -> None:
    """`skillgpt infer --ckpt RUN [--video ...] QUESTION` or `--videos DIR|LIST|DATA --out FILE`."""
    from skillgpt.checkpoint.flags import add_location_flags
    from skillgpt.inference.inputs import add_media_flags, add_sampling_flags

    p = sub.add_parser("infer", help="answer a question about a clip, or rate a folder/list of clips (--videos)")
    p.add_argument("--ckpt", required=True, help="checkpoint folder or run folder (newest checkpoint)")
    p.add_argument("--video", action="append", default=None,
                   help="video file; repeat for several, or VIEW=FILE per view for multi-view models (default: none)")
    p.add_argument("--image", action="append", default=None, help="image file (repeatable; default: none)")
    p.add_argument("--audio", action="append", default=None,
                   help="audio file or video with sound (repeatable; default: none)")
    p.add_argument("question", nargs="?", default=None,
                   help="the question (with --videos: asked about every clip; default there: the checkpoint's "
                        "eval.question)")
    p.add_argument("--videos", default=None, metavar="DIR|LIST.txt|DATA.json",
                   help="rate many clips with one model load: a folder of videos, a text file with one path a line "
                        "(relative to its folder) or a SkillGPT data JSON; needs --out (default: off)")
    p.add_argument("--out", default=None, metavar="FILE.jsonl|FILE.csv",
                   help="with --videos: one row per clip (path, label, probabilities, answer, feedback, error)")
    p.add_argument("--feedback-question", default="What should this athlete improve?",
                   help="with --videos: second question per clip, its answer is the feedback column (\"\" to skip)")
    add_sampling_flags(p, max_new_tokens=64)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N or mps (default: cuda when present, else cpu)")
    p.add_argument("--json", action="store_true", help="print label, level probabilities and answer as JSON")
    p.add_argument("--self-questions", type=int, default=0,
                   help="first ask and answer N questions about the media (needs a vicuna_v1_sq-trained model)")
    add_media_flags(p)
    add_location_flags(p)
    p.set_defaults(func=_infer, check=_check_infer)
