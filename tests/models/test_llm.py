"""LLM loading: which attention implementation `auto` picks, and that the loaded model uses it."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from skillgpt.config.schema import LLMConfig
from skillgpt.models import llm as llm_module


@pytest.mark.parametrize("dtype, cuda, flash, expected", [
    ("bfloat16", True, True, "flash_attention_2"),
    ("float16", True, True, "flash_attention_2"),
    ("float32", True, True, "sdpa"),  # FlashAttention runs in half precision only
    ("bfloat16", False, True, "sdpa"),  # no GPU
    ("bfloat16", True, False, "sdpa"),  # flash-attn not installed
])
def test_auto_picks_flash_attention_only_where_it_can_run(monkeypatch, dtype, cuda, flash, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "flash_attn" and flash
                        else (None if name == "flash_attn" else real(name, *a)))
    assert llm_module.attention_implementation(LLMConfig(path="x", dtype=dtype)) == expected


def test_an_explicit_choice_is_kept_and_the_loaded_model_uses_it(tiny_workspace):
    assert llm_module.attention_implementation(LLMConfig(path="x", attn_implementation="eager")) == "eager"
    model = llm_module.load_llm(LLMConfig(path=str(tiny_workspace.llm)))  # auto on this CPU machine
    assert model.config._attn_implementation == "sdpa"


def test_a_folder_with_only_tokenizer_model_loads(tmp_path):
    """Vicuna/LLaMA releases (PandaGPT's, MiniGPT-4's, LLaVA's base) ship a sentencepiece tokenizer.model and
    no tokenizer.json: load_tokenizer reads it (needs the pinned sentencepiece package)."""
    import json

    import sentencepiece as spm

    text = ["the athlete swings the racket and drops back", "level expert novice intermediate beginner"] * 40
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_prefix=str(tmp_path / "tokenizer"),
                                   vocab_size=40, model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                   minloglevel=2)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    tokenizer = llm_module.load_tokenizer(tmp_path)
    ids = tokenizer("the athlete swings").input_ids
    assert ids[0] == 1 and len(ids) > 3 and tokenizer.decode(ids, skip_special_tokens=True) == "the athlete swings"
