"""Conversation turns: validation of LLaVA/OpenAI-style messages and the text builder the templates share."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from skillgpt.constants import PLACEHOLDERS

if TYPE_CHECKING:  # annotations only: importing templates does not load transformers
    from transformers import PreTrainedTokenizerBase


Span = tuple[int, int]  # [start, end) character offsets of a supervised stretch
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
