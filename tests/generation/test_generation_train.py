"""NExT-GPT's stage 2 through `skillgpt train`: T-X samples with a "generate" field, their captions cached by
`skillgpt cache-caption-embeddings` with a (tiny, random) decoder text encoder, only the signal rows and the output
projector trained; the alignment loss falls and the checkpoint holds generation.safetensors."""
from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
from safetensors.torch import load_file

from skillgpt.cli import main

REPO = Path(__file__).resolve().parents[2]


def _decoder(folder: Path) -> Path:
    """A decoder folder as the caption cache reads it: text_encoder/ (CLIP) and tokenizer/ (CLIP BPE)."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    src = folder / "src"
    src.mkdir(parents=True)
    pieces = ["<|startoftext|>", "<|endoftext|>", *string.ascii_lowercase, *(c + "</w>" for c in string.ascii_lowercase)]
    (src / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    (src / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab=str(src / "vocab.json"), merges=str(src / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                           num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                           bos_token_id=0, eos_token_id=1, pad_token_id=1))
    encoder.save_pretrained(folder / "decoder" / "text_encoder")
    tokenizer.save_pretrained(folder / "decoder" / "tokenizer")
    return folder / "decoder"


def test_stage_two_alignment_trains_through_the_cli(tiny_workspace, tmp_path) -> None:
    pytest.importorskip("diffusers")
    captions = [r["caption"] for r in json.loads((tiny_workspace.data / "captions_train.json").read_text())]
    samples = [{"id": f"tx{i}", "generate": {"modality": "image", "caption": c},
                "conversations": [{"from": "human", "value": f"Show the movement: {c}"},
                                  {"from": "gpt", "value": "[IMG0][IMG1][IMG2][IMG3]"}]}
               for i, c in enumerate(captions)]
    data = tmp_path / "tx_train.json"
    data.write_text(json.dumps(samples))
    cache = tmp_path / "captions"
    assert main(["cache-caption-embeddings", "--data", str(data), "--decoder", str(_decoder(tmp_path)),
                 "--modality", "image", "--out", str(cache)]) == 0

    overrides = tiny_workspace.overrides(2, "gen", "train.init_from=null", f"data.train={data}", "data.val=null",
                                         "data.test=null", "model.generation.image_tokens=4",
                                         "model.generation.image_shape=[77,16]", "model.generation.hidden_dim=16",
                                         "model.generation.heads=2", "model.generation.encoder_layers=1",
                                         "model.generation.decoder_layers=1", "freeze.generation=full",
                                         "freeze.llm=frozen", "freeze.projector=frozen", f"data.caption_cache.image={cache}",
                                         "train.epochs=2", "train.lr=3e-3", "train.eval_every=0")
    assert main(["train", str(REPO / "config" / "stage_2.yaml"), *overrides]) == 0
    run = tiny_workspace.root / "gen" / "stage_2"
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line and '"step"' in line]
    assert losses[-1] < losses[0]
    ckpt = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    saved = load_file(str(ckpt / "generation.safetensors"))
    assert "rows.embed_delta" in saved and "projectors.image.0.query_embs" in saved
    assert not (ckpt / "projector.safetensors").exists() and not (ckpt / "adapter").exists()
