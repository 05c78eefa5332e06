"""NExT-GPT's stage 2 on the embedded synthetic caption set: a frozen tiny LLM reads each caption followed by
[IMG0..3]; only the signal rows and the output projector train, on NExT-GPT's loss (cross-entropy of the signal
tokens + l2 to the caption's text-encoder embedding), and the loss falls. Retrieval is computed but not yet
good with a random frozen LLM (docs/generation.md, status)."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaForCausalLM

from skillgpt.data.synthetic import plan_split
from skillgpt.generation.alignment import retrieval_top1
from skillgpt.generation.head import GenerationHead
from skillgpt.models.output_projectors import OutputProjectorConfig

VICUNA = Path(__file__).parents[1] / "fixtures" / "llava" / "vicuna"
TEXT_LEN = 32  # the stand-in text encoder's sequence (Stable Diffusion's is 77)


def _captions(split: str, per_level: int) -> list[str]:
    plan = plan_split(split, per_level, seed=0, beats=8, num_frames=8, fps=1.0)
    return list(dict.fromkeys(p["caption"] for p in plan))  # distinct captions only


def _batch(tokenizer, head: GenerationHead, captions: list[str]) -> dict[str, torch.Tensor]:
    texts = [f"{c} {head.signal_text('image')}" for c in captions]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    labels = torch.full_like(enc.input_ids, -100)
    ids = torch.tensor(head.signal_ids["image"])
    signal = torch.isin(enc.input_ids, ids)
    labels[signal] = enc.input_ids[signal]  # NExT-GPT supervises the signal tokens of the reply
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": labels}


def _targets(text_encoder, tokenizer, captions: list[str]) -> torch.Tensor:
    """The stand-in decoder text encoder's last hidden states of each caption, padded to TEXT_LEN."""
    enc = tokenizer(captions, return_tensors="pt", padding="max_length", truncation=True, max_length=TEXT_LEN)
    with torch.no_grad():
        return text_encoder(input_ids=enc.input_ids).last_hidden_state


def test_stage_two_aligns_signal_tokens_to_caption_embeddings() -> None:
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(VICUNA)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.padding_side = "right"
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=320, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=4)).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=330, hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2,
                                                max_position_embeddings=TEXT_LEN)).eval()
    llm.requires_grad_(False)
    head = GenerationHead(llm, tokenizer, {"image": 4}, {"image": OutputProjectorConfig(
        kind="transformer", out_dim=16, num_output_tokens=TEXT_LEN, hidden_dim=32, num_heads=2,
        num_encoder_layers=1, num_decoder_layers=1)})
    train, held = _captions("train", 20), _captions("test", 10)
    held = [c for c in held if c not in set(train)]
    assert len(train) >= 40 and len(held) >= 10
    batch, targets = _batch(tokenizer, head, train), _targets(text_encoder, tokenizer, train)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        rows = torch.randperm(len(train))[:16]
        b = {k: v[rows] for k, v in batch.items()}
        out = llm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"],
                  output_hidden_states=True)
        embeds = llm.get_input_embeddings()(b["input_ids"])
        loss = out.loss + head.alignment_loss("image", out.hidden_states, embeds, b["input_ids"], targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.6 * sum(losses[:5])

    grads = [n for n, p in llm.named_parameters() if p.grad is not None]
    assert grads == [] and all(p.grad is not None for p in head.parameters())
    b = _batch(tokenizer, head, held)
    head.eval()
    with torch.no_grad():
        out = llm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], output_hidden_states=True)
        pred = head.conditioning("image", out.hidden_states, llm.get_input_embeddings()(b["input_ids"]), b["input_ids"])
    assert pred.shape == (len(held), TEXT_LEN, 16)
    assert 0.0 <= retrieval_top1(pred, _targets(text_encoder, tokenizer, held)) <= 1.0
