"""Conversation templates: the single place (training, CLI, chat, demo) where turns become text, ids, labels.

A template renders validated messages into one string plus the supervised character spans (assistant
replies with their terminator). `tokenize_conversation` tokenizes it with offsets, labels tokens inside
those spans and expands placeholders (``<video>``) into runs of negative ids replaced by visual features.

Modules: `messages` (turn validation, shared text builder), `kinds` (the template classes), `registry`
(every named template, `get_template`, `llm_template`), `tokenize` (render, tokenize, trim replies).
"""
from skillgpt.constants import IGNORE_INDEX, PLACEHOLDERS  # re-exported: the old import path
from skillgpt.data.templates.kinds import (
    ChatTemplate, ConversationTemplate, Llama2Template, PieceTemplate, SeparatorTemplate, WithSystem,
)
from skillgpt.data.templates.messages import (
    LLAMA2_SYSTEM, VICUNA_V0_SYSTEM, VICUNA_V1_SYSTEM, Message, Span, count_placeholders, normalize_messages,
)
from skillgpt.data.templates.registry import (
    MINIGPT4_SYSTEM, get_template, llm_template, register_template, template_names,
)
from skillgpt.data.templates.tokenize import cut_at_stops, render, tokenize_conversation, trim_reply

__all__ = [
    "IGNORE_INDEX", "LLAMA2_SYSTEM", "MINIGPT4_SYSTEM", "PLACEHOLDERS", "VICUNA_V0_SYSTEM", "VICUNA_V1_SYSTEM",
    "ChatTemplate", "ConversationTemplate", "Llama2Template", "Message", "PieceTemplate", "SeparatorTemplate",
    "Span", "WithSystem", "count_placeholders", "cut_at_stops", "get_template", "llm_template",
    "normalize_messages", "register_template", "render", "template_names", "tokenize_conversation", "trim_reply",
]
