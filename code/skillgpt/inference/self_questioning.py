"""Self-questioning inference (SQ-LLaVA): the model first asks and answers N questions about the media,
then answers the user with that exchange as context. Needs a template trained with supervised
questions (``vicuna_v1_sq``), which teaches the model to continue an open user turn with a question."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from skillgpt.data.dataset import collate
from skillgpt.data.media import collate_media, media_to
from skillgpt.data.templates import tokenize_conversation

Turn = dict[str, str]


def _cut(text: str, stops: list[str]) -> str:
    hits = [i for i in (text.find(s) for s in stops if s) if i != -1]
    return text[: min(hits)] if hits else text


@torch.no_grad()
def ask_question(assistant: Any, turns: list[Turn], media: list | None, max_new_tokens: int = 32) -> str:
    """The model's next question: `turns` ends with an open user turn (e.g. just the placeholders)."""
    tpl, tok = assistant.template, assistant.tokenizer
    ids = tokenize_conversation(turns, tok, tpl, assistant.placeholder_tokens, assistant.cfg.model.llm.max_length,
                                question_prompt=True)["input_ids"]
    out = assistant.model.generate(
        torch.tensor([ids], device=assistant.device),
        media_to(collate_media([media]), assistant.device) if media else None,
        max_new_tokens=max_new_tokens, do_sample=False, stop_strings=tpl.question_stops(tok), tokenizer=tok,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, use_cache=True,
    )
    return _cut(tok.decode(out[0], skip_special_tokens=True), tpl.question_stops(tok)).strip()


def self_questioning_context(assistant: Any, media: list, n: int, max_new_tokens: int = 32) -> list[Turn]:
    """N self-asked questions with the model's own answers; the first question carries the placeholders."""
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
    answer = assistant.reply(context + [{"from": "human", "value": question.replace("<video>", "").strip()}], media, **gen)
    return answer, context


@torch.no_grad()
def label_scores_in_context(assistant: Any, context: list[Turn], media: list, question: str,
                            labels: list[str]) -> Tensor:
    """Log-likelihood of each label answering `question` after `context` (which holds the placeholders).

    The context's own supervised tokens add the same amount to every label, so ranking and softmax
    over labels are those of the final answer alone."""
    q = question
    for placeholder in assistant.placeholder_tokens:
        q = q.replace(placeholder, "")
    items = []
    for label in labels:
        tok = assistant.encode([*context, {"from": "human", "value": q.strip()}, {"from": "gpt", "value": label}], False)
        items.append({"id": label, "input_ids": tok["input_ids"], "labels": tok["labels"], "media": media})
    batch = collate(items, pad_id=assistant.tokenizer.pad_token_id)
    lp = assistant.model.sequence_logprobs(
        batch["input_ids"].to(assistant.device), batch["attention_mask"].to(assistant.device),
        batch["labels"].to(assistant.device), media_to(batch["media"], assistant.device),
    )
    return lp.float().cpu()
