"""Regression check: a SkillGPT training step never computes full-sequence [B, L, V] logits.

    python bench/logits_check.py                        # exit 0 when the LM head runs on supervised rows only
    python bench/logits_check.py --simulate-regression  # patches in full-sequence logits: must exit 1

`scripts/test.sh` runs it before the test suite. It builds a small stage-2 SkillGPT in-process (ImageBind
encoder, mlp2x_gelu projector, a 2-layer Llama with a 32,000-token vocabulary, LoRA on q/k/v/o), runs a
training forward + backward on a long sequence (2 x ~580 tokens, 272 visual per sample, 8 answer tokens
supervised per sample) and fails (exit 1) when:

- the LM head (`causal_lm.get_output_embeddings()`) is applied to more rows than there are supervised
  positions (a forward hook records its input rows), or
- any operator in the forward or backward produces a tensor with a vocabulary-sized last dimension and
  more rows than supervised positions, or a tensor as large as [B, L - 1, V] (a TorchDispatchMode sees
  every operator's outputs), or
- the loss differs from cross-entropy over full-sequence logits computed the plain way (so skipping rows
  cannot drop supervised positions).

Applying the head at supervised positions only (`SkillGPT.supervised_logits`: the causal LM's own forward
with a `logits_to_keep` boolean mask) is what makes SkillGPT's
train step cheaper than Llava's (bench/train_step.py, bench/RESULTS.md); this keeps it that way.
"""
from __future__ import annotations

import argparse
import sys
import time

START = time.perf_counter()  # before the heavy imports: the reported time includes them

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import LlamaConfig, LlamaForCausalLM

from skillgpt.config.schema import EncoderConfig, FreezeConfig, LoraConfig, ProjectorConfig, VideoConfig
from skillgpt.constants import IGNORE_INDEX, PLACEHOLDERS
from skillgpt.models.encoders import build_encoder
from skillgpt.models.freeze import apply_freeze_policy
from skillgpt.models.projectors import build_projector
from skillgpt.models.skill_model import Branch, SkillGPT

VOCAB, HIDDEN, CLIPS, BATCH, TEXT, ANSWER = 32_000, 64, 16, 2, 300, 8


class LargestOutputs(TorchDispatchMode):
    """Records the shape of every operator output: the largest overall and those ending in `vocab`."""

    def __init__(self, vocab: int, params: list[torch.Tensor]) -> None:
        super().__init__()
        self.vocab, self.largest, self.vocab_rows = vocab, (), 0
        self.weights = {p.untyped_storage().data_ptr() for p in params}  # views of weights (lm_head.weight.T) are no logits

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.weights:
                if t.numel() > (torch.Size(self.largest).numel() if self.largest else 0):
                    self.largest = tuple(t.shape)
                if t.ndim and t.shape[-1] == self.vocab:
                    self.vocab_rows = max(self.vocab_rows, t.numel() // self.vocab)
        return out


def build() -> SkillGPT:
    torch.manual_seed(0)
    enc_cfg = EncoderConfig(image_size=56, vision_width=32, vision_layers=1, vision_heads=2, out_dim=32,
                            output="clip_tokens", keep_cls=True, pool=1)
    encoder = build_encoder(enc_cfg, VideoConfig(num_clips=CLIPS, resolution=56))
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024))
    layouts = {"video": {"video": encoder.layout(CLIPS)}, "image": {"video": encoder.layout(1)}}
    projector = build_projector(ProjectorConfig(name="mlp2x_gelu"), encoder.out_dim, HIDDEN, layouts["video"]["video"])
    model = SkillGPT(nn.ModuleDict({"video": encoder}), nn.ModuleDict({"video": projector}), llm, layouts,
                     {"video": [Branch("video")], "audio": []})
    lora = LoraConfig(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    apply_freeze_policy(model, FreezeConfig(encoder="frozen", projector="full", llm="lora"), lora)
    return model.train()


def batch(n_vis: int) -> dict:
    """[text][visual][text][answer], answer supervised; the second sample is shorter (right padding)."""
    g = torch.Generator().manual_seed(0)
    text = torch.randint(10, VOCAB, (BATCH, TEXT + ANSWER), generator=g)
    ids = torch.cat([text[:, :20], torch.full((BATCH, n_vis), PLACEHOLDERS["<video>"]), text[:, 20:]], dim=1)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, -ANSWER:] = ids[:, -ANSWER:]
    mask = torch.ones_like(ids)
    pad = 40  # sample 1: its answer ends 40 tokens early, then padding
    ids[1, -pad:], mask[1, -pad:], labels[1, -pad:] = 0, 0, IGNORE_INDEX
    labels[1, -pad - ANSWER:-pad] = ids[1, -pad - ANSWER:-pad]
    pixels = torch.randn(BATCH, CLIPS, 3, 2, 56, 56, generator=g)
    return dict(input_ids=ids, attention_mask=mask, labels=labels, media={"video": pixels})


def full_sequence_logits(self, input_ids, attention_mask, labels, media=None):
    """What a regression would look like: the head on every position, then the supervised rows picked."""
    targets = labels[:, 1:]
    keep = targets != IGNORE_INDEX
    embeds = self.embed(input_ids, media)
    logits = self.causal_lm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False).logits
    return logits[:, :-1].float()[keep], targets[keep], keep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--simulate-regression", action="store_true",
                    help="patch SkillGPT.supervised_logits to compute full-sequence logits (the check must fail)")
    args = ap.parse_args()
    if args.simulate_regression:
        SkillGPT.supervised_logits = full_sequence_logits
    model = build()
    b = batch(model.num_visual_tokens())
    n_sup = int((b["labels"][:, 1:] != IGNORE_INDEX).sum())
    (bsz, seq), head = b["input_ids"].shape, model.causal_lm.get_output_embeddings()
    rows: list[int] = []
    hook = head.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[:-1].numel()))
    with LargestOutputs(VOCAB, list(model.parameters())) as seen:
        loss = model(**b)
        loss.backward()
    hook.remove()
    with torch.no_grad():  # the plain way: full logits, shifted labels, mean over supervised positions
        hidden = model.hidden_states(b["input_ids"], b["attention_mask"], b["media"])
        plain = F.cross_entropy(head(hidden[:, :-1]).float().flatten(0, 1), b["labels"][:, 1:].flatten(),
                                ignore_index=IGNORE_INDEX)
    problems = []
    if not rows:
        problems.append("the LM head was never called")
    if any(r > n_sup for r in rows):
        problems.append(f"the LM head ran on {max(rows)} rows; only {n_sup} positions are supervised")
    if seen.vocab_rows > n_sup:
        problems.append(f"an operator made a tensor of {seen.vocab_rows} x {VOCAB} (vocabulary-sized rows > "
                        f"{n_sup} supervised positions)")
    if torch.Size(seen.largest).numel() >= bsz * (seq - 1) * VOCAB:
        problems.append(f"an operator made a tensor of shape {list(seen.largest)}, as large as [B, L-1, V] = "
                        f"[{bsz}, {seq - 1}, {VOCAB}]")
    if not torch.allclose(loss.detach(), plain, rtol=1e-4, atol=1e-5):
        problems.append(f"loss {loss.item():.6f} != cross-entropy over full logits {plain.item():.6f}")
    took = time.perf_counter() - START  # imports included
    if problems:
        print("logits_check FAILED: a SkillGPT training step computes logits beyond the supervised positions "
              "(see SkillGPT.supervised_logits):\n  - " + "\n  - ".join(problems), file=sys.stderr)
        return 1
    print(f"logits_check ok: batch {bsz} x {seq} tokens, vocab {VOCAB}; LM head rows {rows} <= {n_sup} supervised; "
          f"largest tensor {list(seen.largest)}; loss matches full-logit cross-entropy ({took:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
