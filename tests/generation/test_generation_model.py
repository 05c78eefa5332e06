"""model.generation inside SkillGPT: the tiny preset with signal tokens builds, NExT-GPT's stage-2 loss joins the
cross-entropy when a batch carries caption embeddings, only what freeze.generation trains gets gradients, and the
trained rows and projectors survive save + load (generation.safetensors)."""
from __future__ import annotations

import pytest
import torch

from skillgpt.checkpoint.delta import load_trained_parts, save_trained_parts
from skillgpt.models.build import build_model

SETTINGS = ("train.init_from=null", "model.generation.image_tokens=4", "model.generation.audio_tokens=2",
            "model.generation.image_shape=[6,8]", "model.generation.audio_shape=[1,8]",
            "model.generation.hidden_dim=16", "model.generation.heads=2", "model.generation.encoder_layers=1",
            "model.generation.decoder_layers=1", "freeze.generation=full", "freeze.llm=frozen",
            "freeze.projector=frozen")


def _batch(tokenizer, model, captions: list[str]) -> dict:
    texts = [f"{c} {model.generation.signal_text('image')}" for c in captions]
    enc = tokenizer(texts, return_tensors="pt", padding=True)
    ids = torch.tensor(model.generation.signal_ids["image"])
    labels = torch.where(torch.isin(enc.input_ids, ids), enc.input_ids, -100)
    target = torch.randn(len(captions), 6, 8, generator=torch.Generator().manual_seed(0))
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": labels,
            "caption_embeds": {"image": (torch.arange(len(captions)), target)}}


def test_generation_head_trains_inside_skillgpt_and_reloads(tiny_workspace, tmp_path) -> None:
    cfg = tiny_workspace.config(2, "generation", *SETTINGS)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg)
    assert tokenizer.convert_tokens_to_ids("[IMG3]") == model.generation.signal_ids["image"][3]
    assert model.causal_lm.get_input_embeddings().num_embeddings >= len(tokenizer)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("generation.") for n in trainable)
    assert "generation.projectors.image.0.query_embs" in trainable and "generation.rows.embed_delta" in trainable

    batch = _batch(tokenizer, model, ["A dribble at a steady tempo.", "A swing that stalls twice."])
    plain = {k: v for k, v in batch.items() if k != "caption_embeds"}
    ce = model(**plain)
    loss = model(**batch)
    assert loss.item() > ce.item()  # the alignment term is added
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {n for n in trainable if not n.startswith("generation.projectors.audio.")}  # no audio here
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    optimizer.step()

    model.eval()
    with torch.no_grad():
        before = model(**batch)
    save_trained_parts(model, cfg, tokenizer, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "generation.safetensors").is_file()
    assert not (tmp_path / "ckpt" / "projector.safetensors").exists()  # frozen parts are not saved
    fresh, _ = build_model(cfg)
    load_trained_parts(fresh, tmp_path / "ckpt")
    fresh.eval()
    with torch.no_grad():
        after = fresh(**batch)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_caption_embeddings_need_signal_tokens(tiny_workspace) -> None:
    cfg = tiny_workspace.config(2, "no-generation", "train.init_from=null", "freeze.generation=full")
    with pytest.raises(ValueError, match="freeze.generation: full, but the model has no signal tokens"):
        build_model(cfg)
