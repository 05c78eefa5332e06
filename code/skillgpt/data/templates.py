"""Conversation templates: the single place (training, CLI, chat, demo) where turns become text, ids, labels.

A template renders validated messages into one string plus the supervised character spans (assistant
replies with their terminator). `tokenize_conversation` tokenizes it with offsets, labels tokens inside
those spans and expands placeholders (``<video>``) into runs of negative ids replaced by visual features.
"""
from __future__ import annotations

import dataclasses

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from transformers import PreTrainedTokenizerBase

from skillgpt.constants import IGNORE_INDEX, PLACEHOLDERS  # noqa: F401 (re-exported: the old import path)

Span = tuple[int, int]
Message = dict[str, str]  # normalised: {"role": "system"|"user"|"assistant", "content": str}

_ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS))

VICUNA_V0_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAMA2_SYSTEM = "You are a helpful assistant that understands videos and answers questions about them."


# --------------------------------------------------------------------------- messages


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[Message]:
    """Validate LLaVA (``from``/``value``) or OpenAI (``role``/``content``) turns into role/content dicts.

    Rules: at most one system turn, first; then strictly alternating user/assistant, starting with user.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ValueError("a conversation must be a non-empty list of turns")
    out: list[Message] = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, Mapping):
            raise ValueError(f"turn {i} must be an object with 'from'/'value' or 'role'/'content', got {turn!r}")
        raw_role = turn.get("role", turn.get("from"))
        content = turn.get("content", turn.get("value"))
        if raw_role is None:
            raise ValueError(f"turn {i} has no 'from' or 'role' field: {dict(turn)!r}")
        role = _ROLE_ALIASES.get(str(raw_role).lower())
        if role is None:
            raise ValueError(f"turn {i} has unknown role {raw_role!r}; expected one of {sorted(_ROLE_ALIASES)}")
        if not isinstance(content, str):
            raise ValueError(f"turn {i} ({raw_role}) needs a string 'value'/'content', got {content!r}")
        out.append({"role": role, "content": content})
    body = out[1:] if out[0]["role"] == "system" else out
    if not body:
        raise ValueError("a conversation needs at least one human/user turn after the system turn")
    offset = len(out) - len(body)
    for j, msg in enumerate(body):
        expected = "user" if j % 2 == 0 else "assistant"
        if msg["role"] != expected:
            where = "the first non-system turn" if j == 0 else f"turn {j + offset}"
            raw = messages[j + offset].get("from", messages[j + offset].get("role"))
            raise ValueError(
                f"{where} must be a {'human/user' if expected == 'user' else 'gpt/assistant'} turn, got {raw!r} "
                "(turns must alternate human/gpt, starting with human; a system turn may only come first)"
            )
    return out


def count_placeholders(messages: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How often each placeholder (all keys of PLACEHOLDERS) occurs over all turns."""
    msgs = normalize_messages(messages)
    return {p: sum(m["content"].count(p) for m in msgs) for p in PLACEHOLDERS}


def _split_system(messages: list[Message], default: str) -> tuple[str, list[Message]]:
    if messages[0]["role"] == "system":
        return messages[0]["content"], messages[1:]
    return default, messages


def _eos(tokenizer: PreTrainedTokenizerBase, template: str) -> str:
    if not tokenizer.eos_token:
        raise ValueError(f"template {template!r} needs a tokenizer with an eos_token")
    return str(tokenizer.eos_token)


class _Builder:
    """Concatenates text pieces and records the supervised character spans."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.length = 0

    def add(self, text: str, supervised: bool = False) -> None:
        if supervised and text:
            self.spans.append((self.length, self.length + len(text)))
        self.parts.append(text)
        self.length += len(text)

    def result(self) -> tuple[str, list[Span]]:
        return "".join(self.parts), self.spans


# --------------------------------------------------------------------------- templates


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

    def _fill(self, text: str, tokenizer: PreTrainedTokenizerBase) -> str:
        return text.replace("{eos}", _eos(tokenizer, self.name)) if "{eos}" in text else text

    def _render(self, messages: list[Message], tokenizer: PreTrainedTokenizerBase, open_last: bool) -> tuple[str, list[Span]]:
        system, turns = _split_system(messages, self.system)
        out = _Builder()
        if system:
            out.add(system + self.system_sep)
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
                out.add(" " + msg["content"] + terminator, supervised=True)
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


_REGISTRY: dict[str, ConversationTemplate] = {}


def register_template(template: ConversationTemplate) -> ConversationTemplate:
    """Add a template to the registry under ``template.name`` (replacing one of the same name)."""
    _REGISTRY[template.name] = template
    return template


register_template(
    SeparatorTemplate(  # PandaGPT: "### Human: {msg}\n### Assistant: {reply}\n###"
        name="vicuna_v0",
        system=VICUNA_V0_SYSTEM,
        system_sep="\n",
        first_user_prefix="### Human: ",
        user_prefix=" Human: ",  # the previous reply's "\n###" terminator supplies the "###"
        assistant_prefix="\n### Assistant:",
        terminator="\n###",
        stops=("###",),
    )
)
register_template(
    SeparatorTemplate(  # LLaVA / Vicuna v1.1: "USER: {msg} ASSISTANT: {reply}</s>"
        name="vicuna_v1",
        system=VICUNA_V1_SYSTEM,
        system_sep=" ",
        first_user_prefix="USER: ",
        user_prefix="USER: ",
        assistant_prefix=" ASSISTANT:",
        terminator="{eos}",
        stops=("{eos}", "USER:"),
    )
)
# SQ-LLaVA: vicuna_v1 whose user questions are supervised as well
register_template(replace(_REGISTRY["vicuna_v1"], name="vicuna_v1_sq", supervise_questions=True))
register_template(Llama2Template())
register_template(ChatTemplate())
# PandaGPT (openllama.py build_one_instance / prompt_wrap; web_demo.py for generation): no system prompt.
register_template(PieceTemplate(
    name="pandagpt", media_open="### Human: <Img>", media_close="</Img> ", text_user="### Human: ",
    later_user="Human: ", assistant="\n### Assistant:", answer_end="\n###",
    gen_user_first="### Human: ", gen_user=" Human: ", gen_assistant="\n### Assistant:",
    gen_reply="\n### Assistant: ", gen_answer_end="\n###", system_sep="\n", stops=("###",)))
MINIGPT4_SYSTEM = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I "
                   "provide it to you. Please answer my questions.")
# MiniGPT-4 (Vicuna v0): training '###Human: {} ###Assistant: ' + answer + '###' (minigpt_base.py), later
# turns '<s>' + that; generation: CONV_VISION_Vicuna0 of conversation.py.
register_template(PieceTemplate(
    name="minigpt4", media_open="###Human: <Img>", media_close="</Img> ", text_user="###Human: ",
    later_user="{bos}###Human: ", assistant=" ###Assistant: ", answer_end="###",
    gen_user_first="Human: ", gen_user="Human: ", gen_assistant="###Assistant: ", gen_reply="###Assistant: ",
    gen_answer_end="###", system=MINIGPT4_SYSTEM, system_sep="###", stops=("###", "{eos}")))
# MiniGPT-4 (Llama-2): '[INST] {} [/INST] ' + answer + '</s>'; generation: CONV_VISION_LLama2.
register_template(PieceTemplate(
    name="minigpt4_llama2", media_open="[INST] <Img>", media_close="</Img> ", text_user="[INST] ",
    later_user="{bos}[INST] ", assistant=" [/INST] ", answer_end="{eos}",
    gen_user_first="{bos}[INST] ", gen_user="{bos}[INST] ", gen_assistant=" [/INST] ", gen_reply=" [/INST] ",
    gen_answer_end="", system=MINIGPT4_SYSTEM, stops=("{eos}", "[INST]")))
# MiniGPT-v2 (chat_template: '[INST] {} [/INST]' + answer + '</s>'); generation: demo_v2.py's CONV_VISION,
# whose '<s>' after the tokenizer's BOS the original also feeds.
register_template(PieceTemplate(
    name="minigpt_v2", media_open="[INST] <Img>", media_close="</Img> ", text_user="[INST] ",
    later_user="{bos}[INST] ", assistant=" [/INST]", answer_end="{eos}",
    gen_user_first="{bos}[INST] ", gen_user="{bos}[INST] ", gen_assistant=" [/INST]", gen_reply=" [/INST]",
    gen_answer_end="", stops=("{eos}", "[INST]")))


def llm_template(llm_cfg: Any) -> ConversationTemplate:
    """The template a model config names (model.llm.template), with model.llm.system_prompt when set."""
    template = get_template(llm_cfg.template)
    system = getattr(llm_cfg, "system_prompt", None)
    return template if system is None else WithSystem(template, system)


def template_names() -> list[str]:
    return sorted(_REGISTRY)


def get_template(name: str | ConversationTemplate) -> ConversationTemplate:
    """Registered template by name (a template instance is returned as is); KeyError lists known names."""
    if isinstance(name, ConversationTemplate):
        return name
    if name not in _REGISTRY:
        raise KeyError(f"unknown conversation template {name!r}; known: {', '.join(template_names())}")
    return _REGISTRY[name]


# --------------------------------------------------------------------------- render / tokenize


def render(
    template: str | ConversationTemplate,
    messages: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    add_generation_prompt: bool = False,
) -> tuple[str, list[Span]]:
    """Full conversation text and the supervised character spans (assistant replies + terminators).

    With ``add_generation_prompt`` the last turn must be the user's and the text ends with the
    assistant prefix, ready for generation.
    """
    tpl = get_template(template)
    msgs = normalize_messages(messages)
    if add_generation_prompt and msgs[-1]["role"] != "user":
        raise ValueError("add_generation_prompt=True needs a conversation whose last turn is the human/user's")
    return tpl.render_messages(msgs, tokenizer, add_generation_prompt)


def _supervised(text: str, start: int, end: int, spans: Sequence[Span]) -> bool:
    """True iff the token's characters (ignoring surrounding whitespace) lie inside one span."""
    s, e = start, end
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if s == e:  # whitespace-only (or zero-width) token: judge by its full range
        s, e = start, end
    if s == e:
        return any(a <= s < b for a, b in spans)
    return any(a <= s and e <= b for a, b in spans)


def tokenize_conversation(
    messages: Sequence[Mapping[str, Any]],
    tokenizer: PreTrainedTokenizerBase,
    template: str | ConversationTemplate,
    visual_tokens: Mapping[str, int],
    max_length: int,
    add_generation_prompt: bool = False,
    sample_id: str = "?",
    question_prompt: bool = False,
) -> dict[str, list[int]]:
    """Token ids and labels (-100 outside supervised spans) with placeholders expanded.

    Each placeholder occurrence becomes ``visual_tokens[placeholder]`` copies of its negative id.
    Raises ValueError (naming ``sample_id``) when the result exceeds ``max_length``: samples are
    never cut, since a cut could split a visual-token run or drop the whole reply.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("tokenize_conversation needs a fast tokenizer (character offsets)")
    tpl = get_template(template)
    msgs = normalize_messages(messages)
    for i, msg in enumerate(msgs):
        found = _PLACEHOLDER_RE.search(msg["content"]) if msg["role"] == "assistant" else None
        if found:
            raise ValueError(f"sample {sample_id}: assistant turn {i} contains the placeholder {found.group()}")
    if question_prompt:  # self-questioning: the last user turn is left open for a generated question
        if msgs[-1]["role"] != "user":
            raise ValueError("question_prompt=True needs a conversation whose last turn is the human/user's")
        text, spans = tpl.render_question_prompt(msgs, tokenizer)
    else:
        text, spans = render(tpl, msgs, tokenizer, add_generation_prompt)
    matches = list(_PLACEHOLDER_RE.finditer(text))
    for ph in sorted({m.group() for m in matches}):
        count = visual_tokens.get(ph)
        if not isinstance(count, int) or count < 1:
            raise ValueError(
                f"sample {sample_id}: placeholder {ph} has no positive visual token count in visual_tokens "
                f"(got {dict(visual_tokens)!r})"
            )

    input_ids: list[int] = []
    labels: list[int] = []
    if tpl.add_bos and tokenizer.bos_token_id is not None:
        input_ids.append(int(tokenizer.bos_token_id))
        labels.append(IGNORE_INDEX)

    def encode(start: int, end: int) -> None:
        if start >= end:
            return
        enc = tokenizer(text[start:end], add_special_tokens=False, return_offsets_mapping=True)
        for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
            input_ids.append(int(tid))
            labels.append(int(tid) if _supervised(text, start + a, start + b, spans) else IGNORE_INDEX)

    starts = [] if question_prompt else tpl.piece_starts(msgs, tokenizer, add_generation_prompt)
    cuts = sorted({*starts, len(text)} - {0})

    def encode_pieces(start: int, end: int) -> None:
        for cut in [c for c in cuts if start < c < end] + [end]:
            encode(start, cut)
            start = cut

    pos = 0
    for m in matches:
        encode_pieces(pos, m.start())
        n = visual_tokens[m.group()]
        input_ids.extend([PLACEHOLDERS[m.group()]] * n)
        labels.extend([IGNORE_INDEX] * n)
        pos = m.end()
    encode_pieces(pos, len(text))

    if len(input_ids) > max_length:
        raise ValueError(
            f"sample {sample_id}: {len(input_ids)} tokens (text + visual) exceed max_length={max_length}; "
            "raise llm.max_length or shorten the sample"
        )
    return {"input_ids": input_ids, "labels": labels}


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """`text` up to the first occurrence of any (non-empty) stop string: the one stop-string trimming
    (replies, streamed replies, self-questioning)."""
    hits = [i for i in (text.find(s) for s in stops if s) if i != -1]
    return text[: min(hits)] if hits else text


def trim_reply(template: str | ConversationTemplate, text: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """Cut generated text at the template's first stop string and strip surrounding whitespace."""
    return cut_at_stops(text, get_template(template).stop_strings(tokenizer)).strip()

