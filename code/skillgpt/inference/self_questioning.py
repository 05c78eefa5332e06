"""Self-questioning inference (SQ-LLaVA): the model first asks and answers N questions about the media,
then answers the user with that exchange as context. Needs a template trained with supervised
questions (``vicuna_v1_sq``), which teaches the model to continue an open user turn with a question."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from skillgpt.data.prompt import expand_view_placeholders, without_placeholders
from skillgpt.data.templates import cut_at_stops, tokenize_conversation
from skillgpt.inference.generation import batch_media
from skillgpt.inference.scoring import score_sequences

Turn = dict[str, str]


@torch.no_grad()
def ask_question(assistant: Any, turns: list[Turn], media: list | None, max_new_tokens: int = 32) -> str:
    """The model's next question: `turns` ends with an open user turn (e.g. just the placeholders)."""
    tpl, tok = assistant.template, assistant.tokenizer
    ids = tokenize_conversation(expand_view_placeholders(turns, assistant.cfg.data), tok, tpl,
                                assistant.placeholder_tokens, assistant.cfg.model.llm.max_length,
                                question_prompt=True)["input_ids"]
    out = assistant.model.generate(
        torch.tensor([ids], device=assistant.device),
        batch_media(assistant.encode_media(media), assistant.device),
        max_new_tokens=max_new_tokens, do_sample=False, stop_strings=tpl.question_stops(tok), tokenizer=tok,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, use_cache=True,
    )
    return cut_at_stops(tok.decode(out[0], skip_special_tokens=True), tpl.question_stops(tok)).strip()


def self_questioning_context(assistant: Any, media: list, n: int, max_new_tokens: int = 32) -> list[Turn]:
    """N self-asked questions with the model's own answers; the first question carries the placeholders."""
    media = assistant.encode_media(media)
    turns: list[Turn] = []
    for k in range(n):
        opener = assistant.with_placeholders("", media).strip() if k == 0 else ""
        asked = ask_question(assistant, turns + [{"from": "human", "value": opener}], media, max_new_tokens)
        question = f"{opener}\n{asked}" if opener else asked
        answer = assistant.reply(turns + [{"from": "human", "value": question}], media, max_new_tokens=max_new_tokens)
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return turns


def ask_with_self_questions(assistant: Any, question: str, media: list, n: int, **gen: Any) -> tuple[str, list[Turn]]:
    """Answer `question` after `n` self-asked questions; returns (answer, the self-questioning turns)."""
    if n <= 0:
        return assistant.ask(question, media, **gen), []
    context = self_questioning_context(assistant, media, n, int(gen.get("max_new_tokens", 32)))
    follow_up = {"from": "human", "value": without_placeholders(question, assistant.placeholder_tokens)}
    answer = assistant.reply(context + [follow_up], media, **gen)
    return answer, context


@torch.no_grad()
def label_scores_in_context(assistant: Any, context: list[Turn], media: list, question: str,
                            labels: list[str]) -> Tensor:
    """Log-likelihood of each label answering `question` after `context` (which holds the placeholders).

    Only the final answer is scored (the context's own answers are the same for every label), so the
    context runs once as the shared KV prefix."""
    q = without_placeholders(question, assistant.placeholder_tokens)
    seqs = [assistant.encode([*context, {"from": "human", "value": q}, {"from": "gpt", "value": label}], False)
            for label in labels]
    # the context's own answers are supervised too: score only each sequence's last answer
    seqs = [{"input_ids": s["input_ids"], "labels": _last_answer(s["labels"])} for s in seqs]
    return score_sequences(assistant.model, seqs, assistant.encode_media(media), assistant.device).float()


def _last_answer(labels: list[int]) -> list[int]:
    """`labels` with every supervised run but the last masked (-100)."""
    out = [-100] * len(labels)
    j = len(labels) - 1
    while j >= 0 and labels[j] == -100:
        j -= 1
    while j >= 0 and labels[j] != -100:
        out[j] = labels[j]
        j -= 1
    return out
