"""Free-text generation: `generate` keyword arguments, stop-string trimming and streaming.

Media reach ``SkillGPT.generate`` as collated payloads; encoder features (``scoring.encode_media``) are
used as they are, so a sample scored and then answered is encoded once.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from skillgpt.data.media import Payload, collate_media, media_to
from skillgpt.data.templates import ConversationTemplate, cut_at_stops

Media = list[tuple[str, Payload]]


def partial_reply(text: str, stops: list[str]) -> str:
    """The part of a still-growing generation that is surely reply text: cut at a stop string, and hold
    back a tail that could be the start of one (and trailing whitespace, which the final strip removes)."""
    text = cut_at_stops(text, stops)
    for stop in (s for s in stops if s):
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                text = text[:-k]
                break
    return text.strip()


def generate_kwargs(template: ConversationTemplate, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int,
                    temperature: float, top_p: float) -> dict[str, Any]:
    """`generate` arguments: greedy when temperature == 0, the template's stop strings, KV cache on."""
    sampling = temperature > 0
    return dict(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        stop_strings=template.stop_strings(tokenizer) or None,
        tokenizer=tokenizer,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        use_cache=True,
    )


def batch_media(media: Optional[Media], device: torch.device) -> Optional[dict[str, Payload]]:
    """One sample's media collated for the model (None without media)."""
    return media_to(collate_media([media]), device) if media else None


@torch.no_grad()
def generate(model: nn.Module, ids: Tensor, media: Optional[dict[str, Payload]], **kwargs: Any) -> Tensor:
    """New token ids for prompt `ids` [1, T]."""
    return model.generate(ids, media, **kwargs)


def stream(model: nn.Module, ids: Tensor, media: Optional[dict[str, Payload]], kwargs: dict[str, Any],
           tokenizer: PreTrainedTokenizerBase, stops: list[str], final: Callable[[Tensor], str],
           timeout: Optional[float]) -> Iterator[str]:
    """Generation streamed: yields the reply so far (cumulative, `partial_reply`) as tokens arrive, last
    `final(new_ids)` (exactly what a non-streamed reply gives). Generation runs in a thread; closing the
    iterator early stops it; an exception raised by `generate` is re-raised here."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, timeout=timeout, skip_special_tokens=True)
    cancel = threading.Event()

    class _Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Tensor, scores: Tensor, **_: Any) -> Tensor:
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["ids"] = generate(model, ids, media, streamer=streamer,
                                     stopping_criteria=StoppingCriteriaList([_Cancelled()]), **kwargs)
        except BaseException as err:  # handed to the consumer below
            result["error"] = err
            streamer.end()

    worker = threading.Thread(target=run, name="skillgpt-generate", daemon=True)
    worker.start()
    text, shown = "", ""
    try:
        for piece in streamer:
            text += piece
            partial = partial_reply(text, stops)
            if partial != shown:
                shown = partial
                yield shown
    finally:
        cancel.set()
        worker.join()
    if "error" in result:
        raise result["error"]
    last = final(result["ids"][0])
    if last != shown or not shown:
        yield last
