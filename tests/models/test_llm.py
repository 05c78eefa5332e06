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
