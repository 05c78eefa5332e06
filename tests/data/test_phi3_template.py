"""phi3_instruct (VideoGPT+'s conv_phi3_instruct): prompt ids equal the original's (tests/fixtures/videogpt_plus)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillgpt.constants import IGNORE_INDEX
from skillgpt.data.templates import render, tokenize_conversation

FIXTURE = Path(__file__).parents[1] / "fixtures" / "videogpt_plus"
GOLDEN = json.loads((FIXTURE / "phi3_prompt.json").read_text())


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(FIXTURE / "phi3_tokenizer")


def _turns(n: int) -> list[dict[str, str]]:
    # the original's "<image>" is IMAGE_TOKEN_INDEX -200, our "<video>" placeholder's id
    return [{"from": r, "value": t.replace("<image>", "<video>")} for r, t in GOLDEN["turns"][:n]]


@pytest.mark.parametrize("name,n,gen", [("full", 4, False), ("generation", 3, True)])
def test_prompt_text_and_ids_are_the_originals(tokenizer, name: str, n: int, gen: bool) -> None:
    text, _ = render("phi3_instruct", _turns(n), tokenizer, add_generation_prompt=gen)
    assert text == GOLDEN[f"prompt_{name}"].replace("<image>", "<video>")
    ids = tokenize_conversation(_turns(n), tokenizer, "phi3_instruct", {"<video>": 1}, 4096,
                                add_generation_prompt=gen)["input_ids"]
    assert ids == GOLDEN[f"input_ids_{name}"]


def test_replies_and_their_end_are_supervised(tokenizer) -> None:
    out = tokenize_conversation(_turns(4), tokenizer, "phi3_instruct", {"<video>": 1}, 4096)
    supervised = tokenizer.decode([t for t, lab in zip(out["input_ids"], out["labels"]) if lab != IGNORE_INDEX])
    assert "Level 3" in supervised and "Push the knees" in supervised and "<|end|>" in supervised
    assert "<|user|>" not in supervised and "squat" not in supervised
