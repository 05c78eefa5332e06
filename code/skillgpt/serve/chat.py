"""`skillgpt chat`: multi-turn chat about a clip in the terminal, with streamed replies.

`Conversation` (the turns of one chat about one set of media) is shared with the Gradio demo; prompt
building and generation are `SkillAssistant`'s (`encode`, `with_placeholders`, `stream_reply`); a loaded
clip is encoded once (`encode_media`) and its features reused by every rating and reply. A model with signal
tokens (model.generation) may answer with images, videos and audio: the chat prints their paths.
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, TextIO

if TYPE_CHECKING:  # torch / transformers are imported with the assistant, not with this module
    from skillgpt.inference.assistant import Media, SkillAssistant, Turn
    from skillgpt.inference.media import MediaFile


@dataclass
class Conversation:
    """One chat about one set of media: completed (question, answer) exchanges, oldest first.

    The first human turn carries the media placeholders (`SkillAssistant.with_placeholders`); when the
    prompt no longer fits the model's `max_length`, the oldest exchanges are dropped (the placeholders
    move to the new first turn)."""

    media: "Media | None" = None
    exchanges: list[tuple[str, str]] = field(default_factory=list)

    def turns(self, assistant: "SkillAssistant", question: str) -> "list[Turn]":
        """The turns to send for `question` (the conversation so far + the new human turn)."""
        while True:
            turns: list[dict[str, str]] = []
            for q, a in self.exchanges:
                turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
            turns.append({"from": "human", "value": question})
            turns[0] = {"from": "human", "value": assistant.with_placeholders(turns[0]["value"], self.media or [])}
            try:
                assistant.encode(turns, True)  # raises ValueError when too long (or malformed)
                return turns
            except ValueError:
                if not self.exchanges:
                    raise
                self.exchanges.pop(0)

    def stream(self, assistant: "SkillAssistant", question: str, files: "list[MediaFile] | None" = None,
               media_prefix: str = "reply", **gen: float) -> Iterator[str]:
        """Stream the reply to `question` (cumulative text); the exchange is kept once the reply is complete.
        With `files`, the media the reply asks for are generated after its text and appended there."""
        answer = ""
        turns = self.turns(assistant, question)
        extra = {"files": files, "media_prefix": media_prefix} if files is not None else {}
        for answer in assistant.stream_reply(turns, self.media, **extra, **gen):  # type: ignore[arg-type]
            yield answer
        self.exchanges.append((question, answer))

    def reset(self) -> None:
        self.exchanges.clear()


def format_rating(probs: dict[str, float], width: int = 30) -> str:
    """Levels with probabilities and a text bar, then the predicted level."""
    name_w = max(len(k) for k in probs)
    lines = [f"  {name:<{name_w}}  {p:6.1%}  {'#' * round(p * width)}" for name, p in probs.items()]
    lines.append(f"  predicted level: {max(probs, key=probs.get)}")  # type: ignore[arg-type]
    return "\n".join(lines)


def describe_error(err: BaseException) -> str:
    """A one-line message for a failed request: input errors as they are, anything else with its type."""
    text = str(err).strip() or type(err).__name__
    return text if isinstance(err, (ValueError, OSError, KeyError)) else f"{type(err).__name__}: {text}"


HELP = """commands:
  /video PATH   load a clip (starts a new conversation)
  /rate         probabilities of the proficiency levels for the loaded clip
  /reset        forget the conversation (keeps the clip)
  /help         this text
  /quit         leave (Ctrl-D works too)
anything else is a question about the clip"""


class ChatShell:
    """The terminal loop: reads lines from `stdin`, prints to `stdout`. `run` returns the exit status."""

    prompt = "you> "
    reply_prefix = "skillgpt> "

    def __init__(self, assistant: "SkillAssistant", stdin: TextIO | None = None, stdout: TextIO | None = None,
                 **gen: float) -> None:
        self.assistant = assistant
        self.stdin = stdin or sys.stdin
        self.out = stdout or sys.stdout
        self.gen = gen
        self.conv = Conversation()
        self.video: Path | None = None

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.say(f"error: {text}")

    def read_line(self) -> str | None:
        """One line (None at end of input). Uses `input` (with line editing) on an interactive terminal."""
        if self.stdin is sys.stdin and self.out is sys.stdout and sys.stdin.isatty():
            try:
                import readline  # noqa: F401  (line editing and history for input())
            except ImportError:  # pragma: no cover - not on every platform
                pass
            try:
                return input(self.prompt)
            except EOFError:
                return None
        self.out.write(self.prompt)
        self.out.flush()
        line = self.stdin.readline()
        return line.rstrip("\r\n") if line else None

    # ---- commands ------------------------------------------------------------------------------
    def load_video(self, arg: str) -> bool:
        """Load the clip at `arg`; False (after an error line) when it cannot be used."""
        try:
            parts = shlex.split(arg)
        except ValueError:
            parts = [arg]
        if len(parts) != 1:
            self.error("usage: /video PATH")
            return False
        path = Path(parts[0]).expanduser()
        try:
            media = self.assistant.encode_media(self.assistant.load_video(path))  # encoded once per clip
        except (ValueError, OSError) as err:  # MediaError / DataError are ValueErrors
            self.error(f"{err} (the previous clip is kept)" if self.video else str(err))
            return False
        self.conv = Conversation(media=media)
        self.video = path
        self.say(f"loaded {path} (new conversation)")
        return True

    def rate(self) -> None:
        if self.conv.media is None:
            self.error("no clip loaded; use /video PATH first")
            return
        self.say(format_rating(self.assistant.rate(self.conv.media)))

    def ask(self, question: str) -> None:
        generates = bool(self.assistant.media_modalities)  # may answer with media: text-only prompts make sense
        if self.conv.media is None and not generates:  # without a clip the model would invent a rating
            self.error("no clip loaded; use /video PATH first (SkillGPT answers questions about a clip)")
            return
        self.out.write(self.reply_prefix)
        self.out.flush()
        shown = ""
        files: list = []
        extra = {"files": files, "media_prefix": "chat"} if generates else {}
        stream = self.conv.stream(self.assistant, question, **extra, **self.gen)
        try:
            for text in stream:
                if text.startswith(shown):
                    self.out.write(text[len(shown):])
                else:  # the streamed text was revised (rare: decoding across token boundaries)
                    self.out.write("\n" + self.reply_prefix + text)
                self.out.flush()
                shown = text
        except KeyboardInterrupt:
            stream.close()  # stops generation; the unfinished exchange is not kept
            self.say(" [interrupted]")
            return
        self.say()
        for f in files:  # the reply's images / videos / audio
            self.say(f"  {f.modality}: {f.path}")

    def handle(self, line: str) -> bool:
        """Run one input line; False means quit."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith("/"):
            try:
                self.ask(line)
            except Exception as err:  # a failed question never ends the chat
                self.say()
                self.error(describe_error(err))
            return True
        cmd, _, arg = line.partition(" ")
        cmd = cmd.lower()
        if cmd in ("/quit", "/exit", "/q"):
            return False
        if cmd == "/video":
            if arg.strip():
                self.load_video(arg.strip())
            else:
                self.error("usage: /video PATH")
        elif cmd == "/reset":
            self.conv.reset()
            self.say("conversation cleared" + (f" (clip {self.video} kept)" if self.video else ""))
        elif cmd == "/rate":
            try:
                self.rate()
            except Exception as err:
                self.error(describe_error(err))
        elif cmd in ("/help", "/?"):
            self.say(HELP)
        else:
            self.error(f"unknown command {cmd}; /help lists the commands")
        return True

    def run(self, video: str | None = None) -> int:
        self.say(f"SkillGPT chat - checkpoint {self.assistant.ckpt}")
        self.say("type a question, or /help for commands (/video PATH, /rate, /reset, /quit)")
        if video and not self.load_video(shlex.quote(video)):
            return 2  # the clip asked for on the command line is unusable: an error, not a chat without it
        while True:
            try:
                line = self.read_line()
            except KeyboardInterrupt:
                self.say("\n(/quit or Ctrl-D to leave)")
                continue
            if line is None:
                self.say()
                break
            if not self.handle(line):
                break
        self.say("bye")
        return 0


def run_chat(ckpt: str, video: str | None = None, device: str | None = None, overrides: list[str] | None = None,
             seed: int = 0, media_flags: list[str] | None = None, **gen: float) -> int:
    """Load the checkpoint (`overrides`: key=value changes to its config) and run the terminal chat
    (`seed`: the random seed of sampled replies; `media_flags`: the media settings given, refused for a
    model without signal tokens)."""
    import torch

    from skillgpt.inference.assistant import SkillAssistant
    from skillgpt.inference.media import check_media_request

    torch.manual_seed(seed)
    print(f"loading {ckpt} ...", flush=True)
    assistant = SkillAssistant(ckpt, device=device, overrides=overrides)
    check_media_request(assistant.model, media_flags or [])
    return ChatShell(assistant, **gen).run(video)
