"""The embedded `tiny` LLM: a small Llama built from a config, with a BPE tokenizer trained on given text
and a short language-model pretraining on text only (as every real LLM is pretrained before it
meets video), so every token has a trained embedding and output row.

It is written as an ordinary Hugging Face folder so the tiny preset loads through exactly the same
`AutoModelForCausalLM.from_pretrained(local_dir)` path as a real model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import random

import torch
from tqdm import tqdm
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts` (offsets are exact, so label masking stays precise)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def build_tiny_llm(
    out_dir: str | Path,
    texts: Iterable[str],
    vocab_size: int = 1024,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    pretrain_texts: list[str] | None = None,
    pretrain_steps: int = 0,
) -> Path:
    """Write a seeded Llama + trained tokenizer to `out_dir`, LM-pretrained on `pretrain_texts`."""
    out = Path(out_dir)
    tokenizer = train_bpe_tokenizer(texts, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if pretrain_texts and pretrain_steps > 0:
        pretrain_lm(model, tokenizer, pretrain_texts, pretrain_steps, seed=seed)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def pretrain_lm(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    texts: list[str],
    steps: int,
    batch_size: int = 16,
    lr: float = 3e-3,
    seed: int = 0,
) -> float:
    """Next-token pretraining on `texts` (AdamW, linear decay); returns the last loss."""
    rng = random.Random(seed)
    encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    encoded = [[tokenizer.bos_token_id, *ids, tokenizer.eos_token_id] for ids in encoded if ids]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / steps)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in (bar := tqdm(range(steps), desc="pretrain tiny LLM", unit="step")):
        batch = [encoded[rng.randrange(len(encoded))] for _ in range(batch_size)]
        longest = max(len(ids) for ids in batch)
        ids = torch.full((batch_size, longest), tokenizer.pad_token_id)
        labels = torch.full((batch_size, longest), -100)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq)
            labels[row, : len(seq)] = torch.tensor(seq)
        loss = model(input_ids=ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return float(loss.item())
