"""Render a conversation through a template and tokenize it: labels on the supervised spans, placeholders
expanded into runs of negative ids that the model replaces with visual features."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from skillgpt.constants import IGNORE_INDEX, PLACEHOLDERS
from skillgpt.data.templates.kinds import ConversationTemplate
from skillgpt.data.templates.messages import Span, _PLACEHOLDER_RE, normalize_messages
from skillgpt.data.templates.registry import get_template

if TYPE_CHECKING:  # annotations only: importing templates does not load transformers
    from transformers import PreTrainedTokenizerBase


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
