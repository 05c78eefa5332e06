"""Signal tokens: added ids, only their rows trainable (small deltas, no vocabulary-sized optimizer state), and
the hooked model equal to the model with the rows written in (merge)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from skillgpt.models.signal_tokens import NEXTGPT_COUNTS, SignalRows, add_signal_tokens, signal_token_names

VICUNA = Path(__file__).parents[1] / "fixtures" / "llava" / "vicuna"


def _llm(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, tie_word_embeddings=tied)
    return LlamaForCausalLM(cfg).eval()


def test_names_follow_nextgpt() -> None:
    names = signal_token_names(NEXTGPT_COUNTS)
    assert [len(names[m]) for m in ("image", "video", "audio")] == [4, 24, 8]
    assert names["image"][0] == "[IMG0]" and names["video"][-1] == "[VID23]" and names["audio"][7] == "[AUD7]"
    assert signal_token_names({"image": 2, "audio": 0}) == {"image": ["[IMG0]", "[IMG1]"]}
    with pytest.raises(ValueError, match="unknown modalities"):
        signal_token_names({"text": 2})
    with pytest.raises(ValueError, match="integer >= 0"):
        signal_token_names({"image": -1})


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_only_the_signal_rows_train_and_merge_is_exact(tied: bool) -> None:
    tokenizer = AutoTokenizer.from_pretrained(VICUNA)
    llm = _llm(tied)
    ids = add_signal_tokens(tokenizer, llm, {"image": 4, "audio": 2})
    assert ids["image"] == list(range(320, 324)) and ids["audio"] == [324, 325]
    assert llm.get_input_embeddings().num_embeddings == 326 == len(tokenizer)
    assert tokenizer("a [IMG0][IMG1] b", add_special_tokens=False).input_ids.count(320) == 1

    llm.requires_grad_(False)
    batch = torch.tensor([[1, 50, 320, 321, 322, 323, 60, 324]])
    with torch.no_grad():
        before = llm(input_ids=batch).logits  # the resized model without trained rows
    rows = SignalRows(llm, ids["image"] + ids["audio"])
    trainable = [p for p in rows.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == (1 if tied else 2) * 6 * 32  # not the 326 x 32 matrices
    loss = llm(input_ids=batch, labels=batch).loss
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    assert all(p.grad is None for p in llm.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    optimizer.step()
    state = sum(t.numel() for s in optimizer.state.values() for t in s.values() if t.ndim)
    assert state == 2 * sum(p.numel() for p in trainable)

    with torch.no_grad():
        rows.embed_delta.normal_(0, 0.5)
        if rows.head_delta is not None:
            rows.head_delta.normal_(0, 0.5)
        hooked = llm(input_ids=batch).logits
        rows.merge(llm)
        merged = llm(input_ids=batch).logits
    assert (hooked - merged).abs().max().item() <= 1e-5
    assert (before - merged)[..., :320].abs().max().item() > 1e-3  # the deltas change the signal positions
    # before the first signal token only the signal columns change (their head rows); the text columns do not
    assert torch.allclose(before[0, :2, :320], merged[0, :2, :320], atol=1e-6)
    assert (before[0, :2, 320:] - merged[0, :2, 320:]).abs().max().item() > 1e-3


def test_bad_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="distinct ids"):
        SignalRows(_llm(False), [5, 5])
    with pytest.raises(ValueError, match="distinct ids"):
        SignalRows(_llm(False), [400])
