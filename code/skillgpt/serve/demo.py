"""`skillgpt demo`: a Gradio app that rates a clip's skill level, writes coaching feedback and chats about it.

Everything model-side goes through `SkillAssistant` (the same template and inference code as `skillgpt
infer` / `chat`): `rate` for the level probabilities, `stream_reply` for streamed answers, and the
multi-turn `Conversation` of `skillgpt.serve.chat`. The model is built in `main` (or by the caller of
`build_demo`), never at import time.

Safety defaults (`ServeConfig`): the server binds 127.0.0.1 and makes no share link unless asked; uploads
are checked (kind, size, duration, decodability) before the model sees them, and a rejected or failing
request shows its message in the page (a warning toast and the status box) without affecting the app;
requests go through Gradio's queue with a fixed number running at once.
"""
from __future__ import annotations

import argparse
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

import gradio as gr

from skillgpt.hashing import file_sha256
from skillgpt.serve.chat import Conversation, describe_error

if TYPE_CHECKING:
    from skillgpt.inference.assistant import Media, SkillAssistant

MB = 1024 * 1024
VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".webm", ".mkv", ".avi", ".mpg", ".mpeg")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
AUDIO_EXTS = (".wav", ".mp3", ".flac", ".ogg", ".m4a", ".aac", ".opus") + VIDEO_EXTS  # a video's sound track
EXTS = {"video": VIDEO_EXTS, "image": IMAGE_EXTS, "audio": AUDIO_EXTS}


@dataclass(frozen=True)
class ServeConfig:
    """Defaults of `skillgpt demo`; the flags (--host, --port, --share, --concurrency, --max-upload-mb,
    --max-duration-s, --examples, --max-new-tokens) override the matching fields."""

    host: str = "127.0.0.1"  # loopback only; pass --host 0.0.0.0 to expose the demo on the network
    port: int = 7860
    share: bool = False  # no public gradio.live link unless --share
    concurrency: int = 2  # requests running at once per event; the rest wait in the queue
    queue_size: int = 64  # requests waiting beyond this are refused ("queue is full")
    max_upload_mb: float = 50.0  # bigger uploads are rejected with a message
    max_duration_s: float = 300.0  # longer videos / audio are rejected with a message
    max_new_tokens: int = 128  # default of the "max new tokens" slider
    temperature: float = 0.0  # default of the temperature slider (0 = greedy)
    top_p: float = 0.9  # default of the top-p slider (used when temperature > 0)
    feedback_question: str = "What should this athlete improve?"
    examples: Optional[str] = None  # folder of example clips (None: the checkpoint's data.test videos)
    max_examples: int = 8

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def transport_limit_bytes(self) -> int:
        """Gradio's own upload cap (twice the checked limit, so a file just over the limit still reaches the
        readable check, while an arbitrarily large one is never stored)."""
        return max(2 * self.max_upload_bytes, MB)


class UploadRejected(ValueError):
    """An upload that the demo refuses; the message is shown to the user as is."""


# --------------------------------------------------------------------------- upload checks


def _duration_s(container: Any, stream: Any) -> float | None:
    if container.duration:
        return container.duration / 1_000_000  # av.time_base
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    rate = getattr(stream, "average_rate", None)
    if stream.frames and rate:
        return stream.frames / float(rate)
    return None


def check_upload(path: str | Path, kind: str, cfg: ServeConfig) -> None:
    """Raise UploadRejected (a readable message naming the file) unless `path` is an acceptable `kind`
    (video | image | audio) file: an allowed extension, at most `max_upload_mb`, decodable, and (video,
    audio) at most `max_duration_s` long."""
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise UploadRejected(f"{name}: the uploaded file is missing; upload it again")
    size = p.stat().st_size
    if size == 0:
        raise UploadRejected(f"{name} is empty; upload a {kind} file")
    if size > cfg.max_upload_bytes:
        raise UploadRejected(f"{name} is too large: {size / MB:.1f} MB (the limit is {cfg.max_upload_mb:g} MB)")
    if p.suffix.lower() not in EXTS[kind]:
        raise UploadRejected(f"{name} is not a {kind} file (accepted: {', '.join(EXTS[kind])})")
    if kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(p) as img:
                img.verify()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise UploadRejected(f"{name} could not be read as an image ({err})") from err
        return
    import av

    try:
        with av.open(str(p)) as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            if not streams:
                raise UploadRejected(f"{name} has no {kind} stream; upload a {kind} file")
            duration = _duration_s(container, streams[0])
    except UploadRejected:
        raise
    except Exception as err:  # PyAV's FFmpegError subclasses, OSError
        reason = getattr(err, "strerror", None) or str(err)
        raise UploadRejected(f"{name} could not be read as a {kind}: it is not a valid media file ({reason})") from err
    if duration is not None and math.isfinite(duration) and duration > cfg.max_duration_s:
        raise UploadRejected(f"{name} is too long: {duration:.1f} s (the limit is {cfg.max_duration_s:g} s)")


# --------------------------------------------------------------------------- example clips


def example_clips(assistant: "SkillAssistant", cfg: ServeConfig) -> list[tuple[str, str]]:
    """(path, label) of example clips: the videos in `cfg.examples`, else those of the checkpoint's
    data.test samples that exist (labelled with their level). Empty when there are none."""
    if cfg.examples:
        folder = Path(cfg.examples).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--examples {folder}: not a folder")
        files = sorted(f for f in folder.iterdir() if f.suffix.lower() in VIDEO_EXTS and f.is_file())
        return [(str(f), f.name) for f in files[: cfg.max_examples]]
    test = assistant.cfg.data.test
    if not test or not Path(test).is_file():
        return []
    from skillgpt.data.dataset import read_samples

    try:
        samples = read_samples(test)
    except ValueError:
        return []
    root = Path(assistant.cfg.data.media_root) if assistant.cfg.data.media_root else Path(test).parent
    by_label: dict[str, list[tuple[str, str]]] = {}
    for s in samples:
        video = s.get("video")
        if isinstance(video, str) and (root / video).is_file():
            label = str(s.get("label", ""))
            by_label.setdefault(label, []).append((str(root / video), f"{Path(video).stem} ({label})" if label
                                                   else Path(video).stem))
    out: list[tuple[str, str]] = []  # interleave the levels so every level shows up early
    while len(out) < cfg.max_examples and any(by_label.values()):
        for label in list(by_label):
            if by_label[label] and len(out) < cfg.max_examples:
                out.append(by_label[label].pop(0))
    return out


# --------------------------------------------------------------------------- the app


class SkillDemo:
    """The handlers of the app; `build()` lays out the page and wires them."""

    def __init__(self, assistant: "SkillAssistant", cfg: ServeConfig) -> None:
        self.assistant = assistant
        self.cfg = cfg
        self.kinds = ["video", "image"] + (["audio"] if "<audio>" in assistant.placeholder_tokens else [])
        self.labels = list(assistant.cfg.eval.labels)
        self._cache: OrderedDict[tuple, "Media"] = OrderedDict()
        self._lock = threading.Lock()

    # ---- media ---------------------------------------------------------------------------------
    def media(self, paths: list[Optional[str]]) -> tuple[tuple, "Media | None"]:
        """Check and load the uploaded media (one optional path per kind); cached by file content."""
        record: dict[str, str] = {}
        key: list[Any] = []
        for kind, path in zip(self.kinds, paths):
            if path:
                check_upload(path, kind, self.cfg)
                record[kind] = str(path)
                key.append((kind, file_sha256(path)))  # the same clip uploaded again is the same clip
        if not record:
            return (), None
        k = tuple(key)
        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
                return k, self._cache[k]
        media = self.assistant.encode_media(self.assistant.load(record))  # features: encoded once per upload
        with self._lock:
            self._cache[k] = media
            while len(self._cache) > 8:
                self._cache.popitem(last=False)
        return k, media

    def _split(self, args: tuple) -> tuple[list[Optional[str]], dict[str, float], dict]:
        n = len(self.kinds)
        paths = list(args[:n])
        temperature, top_p, max_new_tokens, state = args[n:n + 4]
        gen = {"temperature": float(temperature or 0.0), "top_p": float(top_p or 1.0),
               "max_new_tokens": int(max_new_tokens or self.cfg.max_new_tokens)}
        return paths, gen, (state or {})

    @staticmethod
    def _fail(err: BaseException) -> str:
        msg = describe_error(err)
        gr.Warning(msg)
        return f"⚠️ {msg}"

    # ---- handlers (each catches its own failures: a bad request never affects the app) ----------
    def check(self, *paths: Optional[str]) -> str:
        """On upload: check the files at once, so a rejection shows before anything is asked."""
        try:
            for kind, path in zip(self.kinds, paths):
                if path:
                    check_upload(path, kind, self.cfg)
        except Exception as err:
            return self._fail(err)
        return "Ready: press “Rate skill”, or ask a question below."

    def rate(self, *args: Any) -> Iterator[tuple]:
        """Level probabilities, the predicted level, then streamed coaching feedback (which starts the chat)."""
        paths, gen, _ = self._split(args)
        probs: Any = None
        level, feedback, history = "", "", []
        state: dict = {}
        try:
            if not paths[0]:
                raise UploadRejected("Upload a video clip first (or pick an example).")
            key, media = self.media(paths)
            yield probs, level, feedback, history, "Rating…", state
            scores = self.assistant.rate(media)  # type: ignore[arg-type]
            best = max(scores, key=scores.get)  # type: ignore[arg-type]
            probs, level = scores, f"{best} ({scores[best]:.1%})"
            question = self.cfg.feedback_question
            history = [{"role": "user", "content": question}, {"role": "assistant", "content": ""}]
            yield probs, level, feedback, history, "Writing feedback…", state
            conv = Conversation(media=media)
            for feedback in conv.stream(self.assistant, question, **gen):
                history[-1] = {"role": "assistant", "content": feedback}
                yield probs, level, feedback, history, "Writing feedback…", state
            state = {"key": key, "exchanges": conv.exchanges, "history": history}
            yield probs, level, feedback, history, "Done. Ask a follow-up question below.", state
        except Exception as err:
            yield probs, level, feedback, history, self._fail(err), state

    def chat(self, message: str, *args: Any) -> Iterator[tuple]:
        """One chat turn about the current media, streamed. A new clip starts a new conversation."""
        paths, gen, state = self._split(args)
        history = list(state.get("history", []))
        message = (message or "").strip()
        if not message:
            yield history, "", "Type a question first.", state
            return
        try:
            key, media = self.media(paths)
            note = ""
            if state.get("key", key) != key:  # the clip changed since the conversation started
                history, state, note = [], {}, " (new clip: new conversation)"
            conv = Conversation(media=media, exchanges=list(state.get("exchanges", [])))
            history = history + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
            yield history, "", "Answering…" + note, state
            for answer in conv.stream(self.assistant, message, **gen):
                history[-1] = {"role": "assistant", "content": answer}
                yield history, "", "Answering…" + note, state
            state = {"key": key, "exchanges": conv.exchanges, "history": history}
            yield history, "", "Done." + note, state
        except Exception as err:
            if history and history[-1]["role"] == "assistant" and not history[-1]["content"]:
                history = history[:-2]  # drop the unanswered turn
            yield history, message, self._fail(err), state

    @staticmethod
    def clear() -> tuple:
        return [], "", "Conversation cleared.", {}

    # ---- layout --------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        cfg, a = self.cfg, self.assistant
        levels = ", ".join(self.labels)
        with gr.Blocks(title="SkillGPT demo", analytics_enabled=False) as demo:
            gr.Markdown(
                f"## SkillGPT: rate an athlete's skill\n"
                f"Upload a sports clip. The model gives the probability of each proficiency level ({levels}), "
                f"coaching feedback, and answers questions about the clip.  \n"
                f"Checkpoint `{a.ckpt.parent.name}/{a.ckpt.name}` ({a.cfg.preset}); "
                f"uploads up to {cfg.max_upload_mb:g} MB and {cfg.max_duration_s:g} s."
            )
            with gr.Row():
                with gr.Column(scale=1):
                    video = gr.Video(label="Clip", sources=["upload"], elem_id="video-input", height=260)
                    inputs = [video]
                    if "image" in self.kinds:
                        image = gr.Image(label="Image (optional)", type="filepath", sources=["upload"],
                                         elem_id="image-input", height=160)
                        inputs.append(image)
                    if "audio" in self.kinds:
                        audio = gr.Audio(label="Audio (optional)", type="filepath", sources=["upload"],
                                         elem_id="audio-input")
                        inputs.append(audio)
                    rate_btn = gr.Button("Rate skill", variant="primary", elem_id="rate-btn")
                    with gr.Accordion("Generation settings", open=False):
                        temperature = gr.Slider(0.0, 1.5, value=cfg.temperature, step=0.05, label="Temperature",
                                                info="0 = greedy (deterministic)", elem_id="temperature")
                        top_p = gr.Slider(0.05, 1.0, value=cfg.top_p, step=0.05, label="Top-p",
                                          info="nucleus sampling, used when temperature > 0", elem_id="top-p")
                        max_new = gr.Slider(8, 512, value=cfg.max_new_tokens, step=8, label="Max new tokens",
                                            elem_id="max-new-tokens")
                    examples = example_clips(a, cfg)
                    if examples:
                        gr.Examples(examples=[[p] for p, _ in examples], inputs=[video],
                                    example_labels=[lbl for _, lbl in examples], label="Example clips",
                                    examples_per_page=cfg.max_examples)
                with gr.Column(scale=1):
                    rating = gr.Label(label="Skill rating (probability of each level)",
                                      num_top_classes=len(self.labels), elem_id="rating")
                    level = gr.Textbox(label="Predicted level", interactive=False, elem_id="level")
                    feedback = gr.Textbox(label="Coaching feedback", interactive=False, lines=3, elem_id="feedback")
                    status = gr.Textbox(label="Status", interactive=False, elem_id="status",
                                        value="Upload a clip to start.")
            chatbot = gr.Chatbot(label="Chat about the clip", elem_id="chat", height=300)
            with gr.Row():
                question = gr.Textbox(placeholder="Ask about the clip, e.g. “How is the timing?”", show_label=False,
                                      scale=5, elem_id="chat-input")
                send = gr.Button("Send", variant="primary", scale=1, elem_id="send-btn")
                clear = gr.Button("Clear chat", scale=1, elem_id="clear-btn")
            state = gr.State({})

            gen_inputs = [*inputs, temperature, top_p, max_new, state]
            for comp in inputs:
                comp.upload(self.check, inputs=inputs, outputs=[status], api_name=False)
            rate_btn.click(self.rate, inputs=gen_inputs, outputs=[rating, level, feedback, chatbot, status, state],
                           api_name="rate")
            chat_args = dict(inputs=[question, *gen_inputs], outputs=[chatbot, question, status, state])
            send.click(self.chat, api_name="chat", **chat_args)
            question.submit(self.chat, api_name=False, **chat_args)
            clear.click(self.clear, outputs=[chatbot, question, status, state], api_name=False, queue=False)
        demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
        return demo


def build_demo(assistant: "SkillAssistant", cfg: ServeConfig | None = None) -> gr.Blocks:
    """The Gradio app for a loaded assistant (queue configured, not launched)."""
    return SkillDemo(assistant, cfg or ServeConfig()).build()


def launch_kwargs(cfg: ServeConfig) -> dict[str, Any]:
    """What `demo.launch` gets: loopback and no share link unless configured, Gradio's upload cap."""
    return dict(server_name=cfg.host, server_port=cfg.port, share=cfg.share,
                max_file_size=cfg.transport_limit_bytes, show_error=True, ssr_mode=False)


def launch(demo: gr.Blocks, cfg: ServeConfig, block: bool = True) -> gr.Blocks:
    """Start the server (blocking until Ctrl-C unless `block=False`, for tests); returns the demo."""
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(cfg))
    where = "this machine only; --host 0.0.0.0 serves the network" if cfg.host in ("127.0.0.1", "localhost") \
        else f"bound to {cfg.host}"
    print(f"SkillGPT demo: {demo.local_url} ({where})", flush=True)
    if demo.share_url:
        print(f"public link (anyone who has it can use the demo): {demo.share_url}", flush=True)
    if block:
        demo.block_thread()
    return demo


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """ServeConfig from the `skillgpt demo` flags (unset flags keep the defaults)."""
    fields = {k: v for k, v in vars(args).items() if k in ServeConfig.__dataclass_fields__ and v is not None}
    cfg = replace(ServeConfig(), **fields)
    if cfg.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {cfg.concurrency}")
    if cfg.max_upload_mb <= 0 or cfg.max_duration_s <= 0:
        raise ValueError("--max-upload-mb and --max-duration-s must be positive")
    return cfg


def main(args: argparse.Namespace) -> None:
    """`skillgpt demo`: load the checkpoint, build the app, serve until interrupted."""
    from skillgpt.checkpoint.flags import location_overrides
    from skillgpt.inference.assistant import SkillAssistant

    cfg = serve_config(args)
    print(f"loading {args.ckpt} ...", flush=True)
    assistant = SkillAssistant(args.ckpt, device=args.device, overrides=location_overrides(args))
    demo = build_demo(assistant, cfg)
    if cfg.share:
        print("warning: --share makes the demo reachable by anyone with the public link", flush=True)
    launch(demo, cfg)
