"""NExT-GPT's stage 2 (decoder-side alignment) on the embedded synthetic caption set, measured.

The tiny preset's pretrained LLM (``skillgpt make-tiny-llm``) stays frozen; it reads each distinct training caption
followed by ``[IMG0..3]``, and only the signal rows and the image output projector train (NExT-GPT's loss:
cross-entropy of the signal tokens + l2 to the caption's text-encoder embedding). The decoder's text encoder is a
stand-in: a seeded random CLIP text model over the LLM's tokenizer (no Stable Diffusion weights can be
downloaded here), 77 positions as Stable Diffusion's. Reported per epoch: the loss and the retrieval top-1 of the
held-out test captions (distinct, not in train) among each other.

usage: python bench/generation_stage2.py --data data/synthetic --llm ckpt/pretrained/tiny-llm [--epochs 80]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, LlamaForCausalLM

from skillgpt.generation.alignment import l2_loss, retrieval_top1
from skillgpt.generation.head import GenerationHead
from skillgpt.models.output_projectors import OutputProjectorConfig

TEXT_LEN, TEXT_WIDTH = 77, 64


def captions(data: Path, split: str) -> list[str]:
    return list(dict.fromkeys(r["caption"] for r in json.loads((data / f"captions_{split}.json").read_text())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/synthetic"))
    ap.add_argument("--llm", type=Path, default=Path("ckpt/pretrained/tiny-llm"))
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    tokenizer.padding_side = "right"
    llm = LlamaForCausalLM.from_pretrained(args.llm).eval()
    llm.requires_grad_(False)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer) + 16, hidden_size=TEXT_WIDTH,
                                           intermediate_size=2 * TEXT_WIDTH, num_hidden_layers=2,
                                           num_attention_heads=4, max_position_embeddings=TEXT_LEN)).eval()
    head = GenerationHead(llm, tokenizer, {"image": 4}, {"image": OutputProjectorConfig(
        kind="transformer", out_dim=TEXT_WIDTH, num_output_tokens=TEXT_LEN, hidden_dim=128, num_heads=4,
        num_encoder_layers=2, num_decoder_layers=2)})
    train, held = captions(args.data, "train"), captions(args.data, "test")
    held = [c for c in held if c not in set(train)]

    def batch(texts: list[str]) -> dict[str, torch.Tensor]:
        enc = tokenizer([f"{t} {head.signal_text('image')}" for t in texts], return_tensors="pt", padding=True)
        labels = torch.where(torch.isin(enc.input_ids, torch.tensor(head.signal_ids["image"])), enc.input_ids, -100)
        with torch.no_grad():
            tgt = tokenizer(texts, return_tensors="pt", padding="max_length", truncation=True, max_length=TEXT_LEN)
            target = encoder(input_ids=tgt.input_ids).last_hidden_state
        return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": labels, "target": target}

    def conditioning(b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = llm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"],
                  output_hidden_states=True)
        embeds = llm.get_input_embeddings()(b["input_ids"])
        return out.loss, head.conditioning("image", out.hidden_states, embeds, b["input_ids"])

    train_b, held_b = batch(train), batch(held)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr)
    print(f"{len(train)} train captions, {len(held)} held-out; trainable {sum(p.numel() for p in head.parameters()):,}")
    start = time.time()
    for epoch in range(1, args.epochs + 1):
        head.train()
        losses = []
        for rows in torch.randperm(len(train)).split(16):
            b = {k: v[rows] for k, v in train_b.items()}
            ce, pred = conditioning(b)
            loss = ce + l2_loss(pred, b["target"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        head.eval()
        with torch.no_grad():
            top1 = retrieval_top1(conditioning(held_b)[1], held_b["target"])
        print(f"epoch {epoch}: loss {sum(losses) / len(losses):.4f}, held-out retrieval top-1 {top1:.3f} "
              f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
