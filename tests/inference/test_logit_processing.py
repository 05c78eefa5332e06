"""Label scores go through the causal LM's own forward: Granite's logits_scaling, Cohere's logit_scale and
Gemma-2's soft-capping apply to scores as they do in generation."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import (
    CohereConfig, CohereForCausalLM, Gemma2Config, Gemma2ForCausalLM, GraniteConfig, GraniteForCausalLM,
)

from skillgpt.inference.scoring import score_sequences

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
FAMILIES = {
    "granite": lambda: GraniteForCausalLM(GraniteConfig(**SMALL, logits_scaling=4.0)),
    "cohere": lambda: CohereForCausalLM(CohereConfig(**SMALL, logit_scale=0.25)),
    "gemma2": lambda: Gemma2ForCausalLM(Gemma2Config(**SMALL, head_dim=8, final_logit_softcapping=2.0,
                                                     attn_logit_softcapping=None)),
}


class _Wrapped(nn.Module):
    """The two things scoring needs from SkillGPT: `causal_lm` and `embed` (text only here)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.causal_lm = lm

    def embed(self, ids: torch.Tensor, media: object) -> torch.Tensor:
        return self.causal_lm.get_input_embeddings()(ids.clamp(min=0))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_scores_equal_the_models_own_forward(family: str) -> None:
    torch.manual_seed(0)
    lm = FAMILIES[family]().eval()
    with torch.no_grad():  # logits of a few units, where scaling and capping change the log-probs
        lm.get_output_embeddings().weight.mul_(30.0)
    prompt = [5, 9, 13, 2, 7]
    answers = [[11, 3], [17], [20, 21, 22]]
    seqs = [{"input_ids": prompt + a, "labels": [-100] * len(prompt) + a} for a in answers]
    got = score_sequences(_Wrapped(lm), seqs, None, torch.device("cpu"))
    for score, a in zip(got, answers):
        ids = torch.tensor([prompt + a])
        with torch.no_grad():
            logp = lm(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
        want = sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(a))
        torch.testing.assert_close(score, want, atol=1e-4, rtol=0)
    # and the post-processing matters: the bare decoder + LM head gives other scores
    with torch.no_grad():
        ids = torch.tensor([prompt + answers[0]])
        hidden = lm.get_decoder()(input_ids=ids).last_hidden_state
        bare = lm.get_output_embeddings()(hidden)[0, :-1].float().log_softmax(-1)
    bare_score = sum(bare[len(prompt) - 1 + i, t] for i, t in enumerate(answers[0]))
    assert abs(float(bare_score) - float(got[0])) > 1e-3
