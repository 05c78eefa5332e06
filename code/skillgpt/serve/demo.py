"""`skillgpt demo`: a Gradio app that rates a clip's skill level, writes coaching feedback and chats about it.

Everything model-side goes through `SkillAssistant` (the same template and inference code as `skillgpt
infer` / `chat`): `rate` for the level probabilities, `stream_reply` for streamed answers, and the
multi-turn `Conversation` of `skillgpt.serve.chat`. Rating a clip is a conversation of two turns, as the
skill data trains it: the rating question (`eval.question`), then the feedback question, whose answer
fills the "Coaching feedback" box. A multi-view model (`data.views`) gets one clip upload per view. The
model is built in `main` (or by the caller of `build_demo`), never at import time.

Safety defaults (`ServeConfig`): the server binds 127.0.0.1 and makes no share link unless asked (a
warning is printed otherwise, and `--auth user:password` puts Gradio's login in front); uploads are
checked (kind, size, duration, decodability) before the model sees them, and a rejected or failing
request shows its message in the page (a warning toast and the status box) without affecting the app;
requests go through Gradio's queue with a fixed number running at once; every request is logged in one
line (`skillgpt.serve.access`).

A model with signal tokens (model.generation) may answer with media: the reply's image, video and audio
(``generation.decoders.*``, written to ``generation.media_dir``) show under the chat in an image, a video and
an audio player, hidden while the latest reply has none. Without signal tokens the page and the API are as
they were.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import gradio as gr

from skillgpt.constants import PLACEHOLDER_OF
from skillgpt.data.prompt import without_placeholders
from skillgpt.hashing import file_sha256
from skillgpt.serve.access import DEFAULT_HOST, DEFAULT_PORT, exposure_warnings, parse_auth, request_line
from skillgpt.serve.chat import Conversation, describe_error
from skillgpt.serve.uploads import MB, UploadRejected, check_upload, example_clips

if TYPE_CHECKING:
    from skillgpt.inference.assistant import Media, SkillAssistant

Log = Callable[[str], None]


def log_to_stderr(line: str) -> None:
    """The default request log: one line on stderr per request."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ServeConfig:
    """Defaults of `skillgpt demo`; the flags (--host, --port, --share, --auth, --concurrency, --max-upload-mb,
    --max-duration-s, --examples, --max-new-tokens, --feedback-question) override the matching fields."""

    host: str = DEFAULT_HOST  # loopback only; pass --host 0.0.0.0 to expose the demo on the network
    port: int = DEFAULT_PORT
    share: bool = False  # no public gradio.live link unless --share
    auth: Optional[str] = field(default=None, repr=False)  # "user:password": Gradio's login page (--auth)
    concurrency: int = 2  # requests running at once per event; the rest wait in the queue
    queue_size: int = 64  # requests waiting beyond this are refused ("queue is full")
    max_upload_mb: float = 50.0  # bigger uploads are rejected with a message
    max_duration_s: float = 300.0  # longer videos / audio are rejected with a message
    max_new_tokens: int = 128  # default of the "max new tokens" slider
    temperature: float = 0.0  # default of the temperature slider (0 = greedy)
    top_p: float = 0.9  # default of the top-p slider (used when temperature > 0)
    feedback_question: str = "What should this athlete improve?"  # second turn, after the rating question
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


# --------------------------------------------------------------------------- the app


class SkillDemo:
    """The handlers of the app; `build()` lays out the page and wires them. Media inputs are `slots`:
    (kind, view) pairs, one video per view of a multi-view model, then image and (when the model has the
    audio branch) audio."""

    def __init__(self, assistant: "SkillAssistant", cfg: ServeConfig, log: Log = log_to_stderr) -> None:
        self.assistant = assistant
        self.cfg = cfg
        self.log = log
        self.views: list[str] = [str(v) for v in (assistant.cfg.data.views or [])]
        self.slots: list[tuple[str, Optional[str]]] = [("video", v) for v in self.views] or [("video", None)]
        self.slots += [("image", None)] + ([("audio", None)] if "<audio>" in assistant.placeholder_tokens else [])
        self.labels = list(assistant.cfg.eval.labels)
        self.media_out: list[str] = list(getattr(assistant, "media_modalities", []))  # image / video / audio
        self._cache: OrderedDict[tuple, "Media"] = OrderedDict()
        self._lock = threading.Lock()

    # ---- media ---------------------------------------------------------------------------------
    def record(self, paths: list[Optional[str]]) -> dict[str, Any]:
        """A sample-like dict of the uploads (`video` a view dict for a multi-view model), each file checked."""
        record: dict[str, Any] = {}
        videos: dict[str, str] = {}
        for (kind, view), path in zip(self.slots, paths):
            if not path:
                continue
            check_upload(path, kind, self.cfg)
            if view is not None:
                videos[view] = str(path)
            else:
                record[kind] = str(path)
        if videos:
            missing = [v for v in self.views if v not in videos]
            if missing:
                raise UploadRejected(f"Upload a clip for every view: {', '.join(missing)} missing "
                                     f"(this model takes {', '.join(self.views)}).")
            record["video"] = {v: videos[v] for v in self.views}
        return record

    def media(self, paths: list[Optional[str]]) -> tuple[tuple, "Media | None"]:
        """Check and load the uploaded media; cached by file content (the same clip again is not re-encoded)."""
        record = self.record(paths)
        if not record:
            return (), None
        k = tuple((kind, view, file_sha256(path)) for (kind, view), path in zip(self.slots, paths) if path)
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
        n = len(self.slots)
        paths = list(args[:n])
        temperature, top_p, max_new_tokens, state = args[n:n + 4]
        gen = {"temperature": float(temperature or 0.0), "top_p": float(top_p or 1.0),
               "max_new_tokens": int(max_new_tokens or self.cfg.max_new_tokens)}
        return paths, gen, (state or {})

    def _shown(self, values: tuple, files: Optional[list] = None) -> tuple:
        """`values` plus one update per media output (models with signal tokens only): `files` None leaves them
        as they are; a list shows each modality's last file there and hides the modalities without one."""
        if not self.media_out:
            return values
        if files is None:
            return (*values, *(gr.skip() for _ in self.media_out))
        last = {f.modality: str(f.path) for f in files}
        return (*values, *(gr.update(value=last.get(m), visible=m in last) for m in self.media_out))

    def _stream(self, conv: Conversation, question: str, files: list, gen: dict) -> Iterator[str]:
        """`conv.stream`, generating the reply's media into `files` when the model has signal tokens."""
        extra = {"files": files, "media_prefix": "demo"} if self.media_out else {}
        return conv.stream(self.assistant, question, **extra, **gen)

    @staticmethod
    def _fail(err: BaseException) -> str:
        msg = describe_error(err)
        gr.Warning(msg)
        return f"⚠️ {msg}"

    # ---- handlers (each catches its own failures and logs one line: a bad request never affects the app)
    def check(self, request: gr.Request, *paths: Optional[str]) -> str:
        """On upload: check the files at once, so a rejection shows before anything is asked."""
        started, outcome = time.monotonic(), "ok"
        try:
            for (kind, _), path in zip(self.slots, paths):
                if path:
                    check_upload(path, kind, self.cfg)
        except Exception as err:
            outcome = f"rejected: {describe_error(err)}"
            return self._fail(err)
        finally:
            self.log(request_line("upload", request, paths, started, outcome))
        return "Ready: press “Rate skill”, or ask a question below."

    def rate(self, request: gr.Request, *args: Any) -> Iterator[tuple]:
        """Level probabilities and the predicted level, then two streamed turns: the model's answer to the
        rating question and its answer to the feedback question (the coaching feedback), which start the chat."""
        paths, gen, _ = self._split(args)
        started, outcome = time.monotonic(), "cancelled"
        probs: Any = None
        level, feedback, history = "", "", []
        state: dict = {}
        files: list = []
        try:
            if not any(path for (kind, _), path in zip(self.slots, paths) if kind == "video"):
                raise UploadRejected("Upload a video clip first (or pick an example).")
            key, media = self.media(paths)
            yield self._shown((probs, level, feedback, history, "Rating…", state), files)
            scores = self.assistant.rate(media)  # type: ignore[arg-type]
            best = max(scores, key=scores.get)  # type: ignore[arg-type]
            probs, level = scores, f"{best} ({scores[best]:.1%})"
            conv = Conversation(media=media)
            rating_q = self.assistant.cfg.eval.question
            shown_q = without_placeholders(rating_q, PLACEHOLDER_OF.values())
            turns = ((rating_q, shown_q, False, "Answering the rating question…"),
                     (self.cfg.feedback_question, self.cfg.feedback_question, True, "Writing feedback…"))
            for question, shown, box, note in turns:
                history = history + [{"role": "user", "content": shown}, {"role": "assistant", "content": ""}]
                yield self._shown((probs, level, feedback, history, note, state))
                for answer in self._stream(conv, question, files, gen):
                    history[-1] = {"role": "assistant", "content": answer}
                    feedback = answer if box else feedback
                    yield self._shown((probs, level, feedback, history, note, state))
            state = {"key": key, "exchanges": conv.exchanges, "history": history}
            outcome = f"ok level={best}" + (f" media={len(files)}" if files else "")
            yield self._shown((probs, level, feedback, history, "Done. Ask a follow-up question below.", state), files)
        except Exception as err:
            outcome = f"error: {describe_error(err)}"
            yield self._shown((probs, level, feedback, history, self._fail(err), state))
        finally:
            self.log(request_line("rate", request, paths, started, outcome))

    def chat(self, request: gr.Request, message: str, *args: Any) -> Iterator[tuple]:
        """One chat turn about the current media, streamed. A new clip starts a new conversation."""
        paths, gen, state = self._split(args)
        started, outcome = time.monotonic(), "cancelled"
        history = list(state.get("history", []))
        message = (message or "").strip()
        files: list = []
        try:
            if not message:
                outcome = "empty question"
                yield self._shown((history, "", "Type a question first.", state))
                return
            key, media = self.media(paths)
            note = ""
            if state.get("key", key) != key:  # the clip changed since the conversation started
                history, state, note = [], {}, " (new clip: new conversation)"
            conv = Conversation(media=media, exchanges=list(state.get("exchanges", [])))
            history = history + [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
            yield self._shown((history, "", "Answering…" + note, state), files)
            for answer in self._stream(conv, message, files, gen):
                history[-1] = {"role": "assistant", "content": answer}
                yield self._shown((history, "", "Answering…" + note, state))
            state = {"key": key, "exchanges": conv.exchanges, "history": history}
            outcome = "ok" + (f" media={len(files)}" if files else "")
            yield self._shown((history, "", "Done." + note, state), files)
        except Exception as err:
            outcome = f"error: {describe_error(err)}"
            if history and history[-1]["role"] == "assistant" and not history[-1]["content"]:
                history = history[:-2]  # drop the unanswered turn
            yield self._shown((history, message, self._fail(err), state))
        finally:
            self.log(request_line("chat", request, paths, started, outcome, f"question={len(message)} chars"))

    def clear(self) -> tuple:
        return self._shown(([], "", "Conversation cleared.", {}), [])

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
                    inputs = []
                    for kind, view in self.slots:
                        if kind == "video":
                            inputs.append(gr.Video(label=f"Clip: {view} view" if view else "Clip", sources=["upload"],
                                                   elem_id=f"video-input-{view}" if view else "video-input",
                                                   height=260 if not view else 200))
                        elif kind == "image":
                            inputs.append(gr.Image(label="Image (optional)", type="filepath", sources=["upload"],
                                                   elem_id="image-input", height=160))
                        else:
                            inputs.append(gr.Audio(label="Audio (optional)", type="filepath", sources=["upload"],
                                                   elem_id="audio-input"))
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
                        videos = inputs[:len(self.views) or 1]
                        gr.Examples(examples=[paths for paths, _ in examples], inputs=videos,
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
            made: list = []  # the reply's media (models with signal tokens), hidden while there are none
            if self.media_out:
                with gr.Row():
                    for m in self.media_out:
                        kind = {"image": gr.Image, "video": gr.Video, "audio": gr.Audio}[m]
                        extra = {"type": "filepath"} if m != "video" else {}
                        made.append(kind(label=f"Generated {m}", interactive=False, visible=False,
                                         elem_id=f"generated-{m}", **extra))
            state = gr.State({})

            gen_inputs = [*inputs, temperature, top_p, max_new, state]
            for comp in inputs:
                comp.upload(self.check, inputs=inputs, outputs=[status], api_name=False)
            rate_btn.click(self.rate, inputs=gen_inputs,
                           outputs=[rating, level, feedback, chatbot, status, state, *made], api_name="rate")
            chat_args = dict(inputs=[question, *gen_inputs], outputs=[chatbot, question, status, state, *made])
            send.click(self.chat, api_name="chat", **chat_args)
            question.submit(self.chat, api_name=False, **chat_args)
            clear.click(self.clear, outputs=[chatbot, question, status, state, *made], api_name=False, queue=False)
        demo.media_dirs = [str(a.media_maker.media_dir)] if self.media_out else []  # served: launch's allowed_paths
        demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size)
        return demo


def build_demo(assistant: "SkillAssistant", cfg: ServeConfig | None = None, log: Log = log_to_stderr) -> gr.Blocks:
    """The Gradio app for a loaded assistant (queue configured, not launched); `log` gets one line per request."""
    return SkillDemo(assistant, cfg or ServeConfig(), log).build()


def launch_kwargs(cfg: ServeConfig, allowed_paths: Optional[list[str]] = None) -> dict[str, Any]:
    """What `demo.launch` gets: loopback and no share link unless configured, the optional login,
    Gradio's upload cap; `allowed_paths`: folders of generated media it may serve (besides the working
    directory and the temp folder, which Gradio serves anyway)."""
    extra = {"allowed_paths": list(allowed_paths)} if allowed_paths else {}
    return dict(server_name=cfg.host, server_port=cfg.port, share=cfg.share, auth=parse_auth(cfg.auth),
                auth_message="SkillGPT demo: log in with the user and password given to --auth" if cfg.auth else None,
                max_file_size=cfg.transport_limit_bytes, show_error=True, ssr_mode=False, **extra)


def launch(demo: gr.Blocks, cfg: ServeConfig, block: bool = True) -> gr.Blocks:
    """Start the server (blocking until Ctrl-C unless `block=False`, for tests); returns the demo. Warns
    on stderr when the demo is reachable beyond this machine."""
    for warning in exposure_warnings(cfg.host, cfg.share, cfg.auth is not None):
        print(warning, file=sys.stderr, flush=True)
    try:
        demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(cfg, getattr(demo, "media_dirs", None)))
    except OSError as err:  # Gradio: "Cannot find empty port ... passing the server_port parameter to launch()"
        raise OSError(f"cannot serve the demo on {cfg.host}:{cfg.port}: the port is in use (or the host is not an "
                      f"address of this machine); pick another with --port N (or --host)") from err
    where = "this machine only; --host 0.0.0.0 serves the network" if cfg.host in ("127.0.0.1", "localhost") \
        else f"bound to {cfg.host}"
    login = "; login required" if cfg.auth else ""
    print(f"SkillGPT demo: {demo.local_url} ({where}{login})", flush=True)
    if demo.share_url:
        print(f"public link (anyone who has it can use the demo): {demo.share_url}", flush=True)
    if block:
        demo.block_thread()
    return demo


def serve_config(args: argparse.Namespace) -> ServeConfig:
    """ServeConfig from the `skillgpt demo` flags (unset flags keep the defaults); bad values -> ValueError."""
    fields = {k: v for k, v in vars(args).items() if k in ServeConfig.__dataclass_fields__ and v is not None}
    cfg = replace(ServeConfig(), **fields)
    if cfg.concurrency < 1:
        raise ValueError(f"--concurrency must be at least 1, got {cfg.concurrency}")
    if cfg.max_upload_mb <= 0 or cfg.max_duration_s <= 0:
        raise ValueError("--max-upload-mb and --max-duration-s must be positive")
    if not 0 <= cfg.port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {cfg.port}")
    if not cfg.feedback_question.strip():
        raise ValueError("--feedback-question must not be empty")
    parse_auth(cfg.auth)
    return cfg


def main(args: argparse.Namespace) -> None:
    """`skillgpt demo`: load the checkpoint, build the app, serve until interrupted."""
    from skillgpt.checkpoint.flags import location_overrides
    from skillgpt.inference.assistant import SkillAssistant
    from skillgpt.inference.inputs import media_overrides
    from skillgpt.inference.media import check_media_request

    cfg = serve_config(args)
    media, flags = media_overrides(args)
    print(f"loading {args.ckpt} ...", flush=True)
    assistant = SkillAssistant(args.ckpt, device=args.device, overrides=location_overrides(args) + media)
    check_media_request(assistant.model, flags)
    launch(build_demo(assistant, cfg), cfg)
