"""The kinds of conversation template: separator-style (Vicuna), Llama-2 `[INST]`, the tokenizer's own chat
template (ChatML/Qwen), piece-wise originals (PandaGPT, MiniGPT-4) and a system-prompt override."""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

from skillgpt.data.templates.messages import (
    LLAMA2_SYSTEM, Message, Span, _Builder, _eos, _PLACEHOLDER_RE, _split_system,
)

if TYPE_CHECKING:  # annotations only: importing templates does not load transformers
    from transformers import PreTrainedTokenizerBase


class ConversationTemplate(ABC):
    """A conversation format. ``add_bos``: prepend the tokenizer's BOS id before the rendered text."""

    name: str
    add_bos: bool

    @abstractmethod
    def render_messages(
        self, messages: list[Message], tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool
    ) -> tuple[str, list[Span]]:
        """Render already-normalised messages; returns the text and its supervised character spans."""

    @abstractmethod
    def stop_strings(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """Strings that end an assistant reply during generation."""

    def render_question_prompt(self, messages: list[Message], tokenizer: PreTrainedTokenizerBase) -> tuple[str, list[Span]]:
        """Self-questioning: the conversation so far, ending with an open user turn for the model to
        continue with a question. Only templates trained with supervised questions can do this."""
        raise ValueError(f"template {self.name!r} does not learn to ask questions; use vicuna_v1_sq")

    def question_stops(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        """Strings that end a generated question."""
        return []

    def piece_starts(self, messages: list[Message], tokenizer: PreTrainedTokenizerBase,
                     add_generation_prompt: bool) -> list[int]:
        """Character offsets where tokenization restarts (besides placeholders): the original tokenized
        the pieces of its prompt separately. Default: one piece."""
        return []


@dataclass
class SeparatorTemplate(ConversationTemplate):
    """``system + system_sep``, then per turn ``user_prefix msg assistant_prefix`` and the supervised
    `` reply terminator``. ``{eos}`` in the terminator/stops is replaced by the tokenizer's eos string."""

    name: str
    system: str
    system_sep: str
    first_user_prefix: str
    user_prefix: str
    assistant_prefix: str
    terminator: str
    stops: tuple[str, ...]
    add_bos: bool = True
    # Self-questioning (SQ-LLaVA): the user's questions are supervised too (the text after the last
    # placeholder of a turn, and the assistant prefix that ends it), so the model learns to ask.
    supervise_questions: bool = False
    system_prefix: str = ""  # written before the system prompt (kept when the prompt is overridden)
    reply_prefix: str = " "  # between the assistant prefix and the reply

    def _fill(self, text: str, tokenizer: PreTrainedTokenizerBase) -> str:
        return text.replace("{eos}", _eos(tokenizer, self.name)) if "{eos}" in text else text

    def _render(self, messages: list[Message], tokenizer: PreTrainedTokenizerBase, open_last: bool) -> tuple[str, list[Span]]:
        system, turns = _split_system(messages, self.system)
        out = _Builder()
        if system:
            out.add(self.system_prefix + system + self.system_sep)
        terminator = self._fill(self.terminator, tokenizer)
        for i, msg in enumerate(turns):
            if msg["role"] == "user":
                out.add(self.first_user_prefix if i == 0 else self.user_prefix)
                media = [m.end() for m in _PLACEHOLDER_RE.finditer(msg["content"])]
                cut = media[-1] if media else 0
                out.add(msg["content"][:cut])
                if open_last and i == len(turns) - 1:
                    # end where a token boundary was in training: the model generates the whitespace itself
                    out.add(msg["content"][cut:])
                    text, spans = out.result()
                    return text.rstrip(), spans
                out.add(msg["content"][cut:], supervised=self.supervise_questions)
                out.add(self.assistant_prefix, supervised=self.supervise_questions)
            else:
                out.add(self.reply_prefix + msg["content"] + terminator, supervised=True)
        return out.result()

    def render_messages(
        self, messages: list[Message], tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool
    ) -> tuple[str, list[Span]]:
        return self._render(messages, tokenizer, open_last=False)

    def render_question_prompt(self, messages: list[Message], tokenizer: PreTrainedTokenizerBase) -> tuple[str, list[Span]]:
        if not self.supervise_questions:
            return super().render_question_prompt(messages, tokenizer)
        return self._render(messages, tokenizer, open_last=True)

    def question_stops(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        return [self.assistant_prefix.strip(), *self.stop_strings(tokenizer)]

    def stop_strings(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        return [self._fill(s, tokenizer) for s in self.stops]


@dataclass
class Llama2Template(ConversationTemplate):
    """Meta's Llama-2 chat format: ``[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{msg} [/INST] {reply} </s>``;
    later turns start with the BOS string, as in Meta's reference."""

    name: str = "llama2"
    system: str = LLAMA2_SYSTEM
    add_bos: bool = True

    def render_messages(
        self, messages: list[Message], tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool
    ) -> tuple[str, list[Span]]:
        system, turns = _split_system(messages, self.system)
        eos = _eos(tokenizer, self.name)
        bos = str(tokenizer.bos_token or "")
        out = _Builder()
        for i, msg in enumerate(turns):
            if msg["role"] == "user":
                head = "[INST] " if i == 0 else bos + "[INST] "
                sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if i == 0 and system else ""
                out.add(head + sys_block + msg["content"] + " [/INST]")
            else:
                out.add(" " + msg["content"] + " " + eos, supervised=True)
        return out.result()

    def stop_strings(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        return [_eos(tokenizer, self.name), "[INST]"]


class ChatTemplate(ConversationTemplate):
    """The tokenizer's own jinja ``chat_template``. The supervised part of assistant turn i is the text
    that rendering ``messages[:i+1]`` adds to rendering ``messages[:i]`` with a generation prompt, so
    the end-of-turn marker (e.g. ``<|im_end|>``) is learnt. BOS comes from the template itself."""

    name = "chat_template"
    add_bos = False

    @staticmethod
    def _apply(tokenizer: PreTrainedTokenizerBase, messages: list[Message], gen: bool) -> str:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat_template' needs a tokenizer with a chat_template")
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template returned {type(text).__name__}, expected str")
        return text

    def render_messages(
        self, messages: list[Message], tokenizer: PreTrainedTokenizerBase, add_generation_prompt: bool
    ) -> tuple[str, list[Span]]:
        full = self._apply(tokenizer, messages, add_generation_prompt)
        spans: list[Span] = []
        for i, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            before = self._apply(tokenizer, messages[:i], True)
            upto = self._apply(tokenizer, messages[: i + 1], False)
            if not (upto.startswith(before) and full.startswith(upto)):
                raise ValueError(
                    "the tokenizer's chat_template does not render conversations incrementally (rendering "
                    f"turn {i} changes earlier text), so assistant spans cannot be located; use another template"
                )
            if len(upto) > len(before):
                spans.append((len(before), len(upto)))
        return full, spans

    def stop_strings(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        marker = "SKILLGPT_REPLY_END"
        probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
        text, spans = self.render_messages(probe, tokenizer, False)
        stops: list[str] = []
        if spans:
            reply = text[spans[-1][0] : spans[-1][1]]
            end_marker = reply[reply.find(marker) + len(marker) :].strip() if marker in reply else ""
            if end_marker:
                stops.append(end_marker)
        if tokenizer.eos_token and tokenizer.eos_token not in stops:
            stops.append(str(tokenizer.eos_token))
        return stops


def _media_first(content: str) -> tuple[str, str]:
    """(the turn's placeholders joined, the turn's text without them and the whitespace after each)."""
    media = "".join(m.group() for m in _PLACEHOLDER_RE.finditer(content))
    return media, re.sub(f"(?:{_PLACEHOLDER_RE.pattern})[ \\t]*\\n?", "", content)


@dataclass
class PieceTemplate(ConversationTemplate):
    """Systems that tokenize each piece of a prompt separately and wrap the media of the first human turn
    in ``<Img>...</Img>`` (PandaGPT, MiniGPT-4, MiniGPT-v2). Two layouts, each as the original has it:

    - training (``add_generation_prompt=False``): ``media_open`` + media + ``media_close`` + question +
      ``assistant``, then per reply the supervised ``reply + answer_end``, then ``later_user`` + question
      + ``assistant``; every piece (and the text between placeholders) is tokenized on its own, so a
      SentencePiece tokenizer puts its word-start marker at the start of each piece, as the original does.
    - generation: the original demo's one string ``system + system_sep + gen_user_first + media_open...``
      with the history in ``gen_*`` separators, split only at placeholders.
    ``{bos}`` is the tokenizer's BOS string (tokenized as the special token). A system turn (or
    model.llm.system_prompt) replaces ``system`` in generation and is put first, with ``system_sep``, in
    training (where the originals have none)."""

    name: str
    media_open: str
    media_close: str
    text_user: str  # a first human turn without media
    later_user: str
    assistant: str
    answer_end: str
    gen_user_first: str
    gen_user: str
    gen_assistant: str
    gen_reply: str  # the assistant prefix of a past reply in generation (``gen_assistant`` + what precedes it)
    gen_answer_end: str
    system: str = ""
    system_sep: str = ""
    stops: tuple[str, ...] = ()
    add_bos: bool = True

    def _fill(self, text: str, tokenizer: PreTrainedTokenizerBase) -> str:
        return text.replace("{bos}", str(tokenizer.bos_token or "")).replace("{eos}", _eos(tokenizer, self.name)) \
            if "{" in text else text

    def pieces(self, messages: list[Message], tokenizer: PreTrainedTokenizerBase,
               add_generation_prompt: bool) -> list[tuple[str, bool]]:
        """(text, supervised) pieces, each tokenized on its own; a BOS written in the text is a piece of
        its own, so the text after it starts a word as in the originals' (legacy) slow Llama tokenizer."""
        bos = str(tokenizer.bos_token or "")
        out = self._pieces(messages, tokenizer, add_generation_prompt)
        if not bos:
            return out
        split: list[tuple[str, bool]] = []
        for text, supervised in out:
            parts = text.split(bos)
            for j, part in enumerate(parts):
                split += ([(bos, supervised)] if j else []) + ([(part, supervised)] if part else [])
        return split

    def _pieces(self, messages: list[Message], tokenizer: PreTrainedTokenizerBase,
                add_generation_prompt: bool) -> list[tuple[str, bool]]:
        system, turns = _split_system(messages, None)  # type: ignore[arg-type]
        f = lambda s: self._fill(s, tokenizer)  # noqa: E731
        if add_generation_prompt:
            return self._generation(system if system is not None else self.system, turns, f)
        out: list[tuple[str, bool]] = [(system + f(self.system_sep), False)] if system else []
        for i, msg in enumerate(turns):
            if msg["role"] == "assistant":
                out.append((msg["content"] + f(self.answer_end), True))
                continue
            media, question = _media_first(msg["content"]) if i == 0 else ("", msg["content"])
            if i == 0 and media:
                out += [(f(self.media_open), False), (media, False),
                        (f(self.media_close) + question + f(self.assistant), False)]
            else:
                out.append((f(self.text_user if i == 0 else self.later_user) + question + f(self.assistant), False))
        return out

    def _generation(self, system: str, turns: list[Message], f) -> list[tuple[str, bool]]:
        text = system + f(self.system_sep) if system else ""
        for i, msg in enumerate(turns):
            if msg["role"] == "assistant":
                text += f(self.gen_reply) + msg["content"] + f(self.gen_answer_end)
                continue
            media, question = _media_first(msg["content"]) if i == 0 else ("", msg["content"])
            wrapped = f"<Img>{media}</Img> " if media else ""
            text += f(self.gen_user_first if i == 0 else self.gen_user) + wrapped + question
        return [(text + f(self.gen_assistant), False)]

    def render_messages(self, messages: list[Message], tokenizer: PreTrainedTokenizerBase,
                        add_generation_prompt: bool) -> tuple[str, list[Span]]:
        out = _Builder()
        for text, supervised in self.pieces(messages, tokenizer, add_generation_prompt):
            out.add(text, supervised)
        return out.result()

    def piece_starts(self, messages: list[Message], tokenizer: PreTrainedTokenizerBase,
                     add_generation_prompt: bool) -> list[int]:
        starts, pos = [], 0
        for text, _ in self.pieces(messages, tokenizer, add_generation_prompt):
            starts.append(pos)
            pos += len(text)
        return starts

    def stop_strings(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        return [self._fill(s, tokenizer) for s in self.stops]


@dataclass
class WithSystem(ConversationTemplate):
    """`inner` with `system` as the system prompt of conversations that have no system turn
    (model.llm.system_prompt, ``--system``; "" removes the template's default system prompt)."""

    inner: ConversationTemplate
    system: str

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def add_bos(self) -> bool:  # type: ignore[override]
        return self.inner.add_bos

    def _with(self, messages: list[Message]) -> list[Message]:
        return messages if messages[0]["role"] == "system" else [{"role": "system", "content": self.system}, *messages]

    def render_messages(self, messages, tokenizer, add_generation_prompt):  # type: ignore[no-untyped-def]
        if isinstance(self.inner, ChatTemplate) and not self.system:
            return self.inner.render_messages(messages, tokenizer, add_generation_prompt)
        return self.inner.render_messages(self._with(messages), tokenizer, add_generation_prompt)

    def render_question_prompt(self, messages, tokenizer):  # type: ignore[no-untyped-def]
        return self.inner.render_question_prompt(self._with(messages), tokenizer)

    def piece_starts(self, messages, tokenizer, add_generation_prompt):  # type: ignore[no-untyped-def]
        return self.inner.piece_starts(self._with(messages), tokenizer, add_generation_prompt)

    def stop_strings(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        return self.inner.stop_strings(tokenizer)

    def question_stops(self, tokenizer: PreTrainedTokenizerBase) -> list[str]:
        return self.inner.question_stops(tokenizer)
