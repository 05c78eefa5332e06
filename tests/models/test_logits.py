"""The loss and label scores use the causal LM's own forward: its logit post-processing applies (Granite's
logits_scaling, Cohere's logit_scale, Gemma-2's final soft-capping), the LM head runs on supervised rows
only, and no KV cache is built.

Before the fix (`get_decoder()` output through `get_output_embeddings()`), the Granite, Cohere and Gemma-2
cases failed (scores off by 15-47 nats with these weights), and so did the KV-cache check; Llama and
Qwen2, which post-process nothing, passed.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from skillgpt.constants import IGNORE_INDEX, PLACEHOLDERS
from skillgpt.models.layout import TokenLayout
from skillgpt.models.projectors import LinearProjector
from skillgpt.models.skill_model import Branch, SkillGPT

VOCAB, HIDDEN, FEAT = 96, 32, 8
LAYOUT = TokenLayout(groups=3, prefix=1, grid=0)  # 3 feature tokens per video
SMALL = dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, initializer_range=0.5, pad_token_id=0)
FAMILIES = {  # model_type -> its logit post-processing, set far from neutral so that skipping it shows
    "llama": {},
    "qwen2": {},
    "granite": {"logits_scaling": 6.0},
    "cohere": {"logit_scale": 0.2},
    "gemma2": {"final_logit_softcapping": 1.5, "head_dim": 8, "sliding_window": 16},
}


def _model(model_type: str) -> SkillGPT:
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **SMALL, **FAMILIES[model_type])
    llm = AutoModelForCausalLM.from_config(config).eval()
    projector = LinearProjector(FEAT, HIDDEN)
    layouts = {"video": {"video": LAYOUT}, "image": {"video": LAYOUT}}
    return SkillGPT(nn.ModuleDict({"video": nn.Identity()}), nn.ModuleDict({"video": projector}), llm, layouts,
                    {"video": [Branch("video")], "audio": []}).eval()


def _batch() -> dict:
    """2 samples [text][video][text][answer]; the second is shorter (right padding), so the supervised
    positions differ between the samples."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (2, 16), generator=g)
    ids[:, 2:5] = PLACEHOLDERS["<video>"]
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 11:16] = ids[0, 11:16]
    labels[1, 8:12] = ids[1, 8:12]
    mask = torch.ones_like(ids)
    ids[1, 12:], mask[1, 12:] = 0, 0
    feats = torch.randn(2, LAYOUT.num_tokens, FEAT, generator=g)
    return dict(input_ids=ids, attention_mask=mask, labels=labels, media={"video": {"video": feats}})


def _own_forward_logprobs(model: SkillGPT, b: dict) -> torch.Tensor:
    """Log-softmax of the causal LM's own full-sequence forward: [B, L-1, V] (position t predicts t+1)."""
    embeds = model.embed(b["input_ids"], b["media"])
    logits = model.causal_lm(inputs_embeds=embeds, attention_mask=b["attention_mask"]).logits
    return logits[:, :-1].float().log_softmax(-1)


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_scores_and_loss_equal_the_models_own_forward(model_type):
    model, b = _model(model_type), _batch()
    with torch.no_grad():
        ref = _own_forward_logprobs(model, b)
        targets = b["labels"][:, 1:]
        keep = targets != IGNORE_INDEX
        token_lp = ref.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * keep
        want_scores, want_loss = token_lp.sum(1), -token_lp.sum() / keep.sum()
        got_scores = model.sequence_logprobs(b["input_ids"], b["attention_mask"], b["labels"], b["media"])
        got_loss = model(**b)
    torch.testing.assert_close(got_scores, want_scores, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_loss, want_loss, atol=1e-5, rtol=1e-5)


def test_the_head_runs_on_supervised_rows_only_without_a_kv_cache():
    model, b = _model("granite"), _batch()
    n_supervised = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
    head_rows, calls = [], []
    model.causal_lm.get_output_embeddings().register_forward_hook(
        lambda m, args, out: head_rows.append(args[0].shape[:-1].numel()))
    model.causal_lm.register_forward_hook(
        lambda m, args, kwargs, out: calls.append((kwargs.get("use_cache"), out.past_key_values)), with_kwargs=True)
    loss = model(**b)
    loss.backward()
    with torch.no_grad():
        model.sequence_logprobs(b["input_ids"], b["attention_mask"], b["labels"], b["media"])
    assert head_rows == [n_supervised, n_supervised]
    assert calls == [(False, None), (False, None)]
    assert model.projector["video"].weight.grad is not None


def test_a_batch_without_supervised_tokens_gives_zero_loss_with_a_graph():
    model, b = _model("llama"), _batch()
    b["labels"][:] = IGNORE_INDEX
    loss = model(**b)
    loss.backward()
    assert loss.item() == 0.0 and model.projector["video"].weight.grad is not None
    assert F.mse_loss(model.projector["video"].weight.grad, torch.zeros_like(model.projector["video"].weight)) == 0
