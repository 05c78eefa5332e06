"""NExT-GPT's stage 2 through `skillgpt train` (config/nextgpt/stage_2.yaml, the shared `nextgpt_run` fixture): T-X
samples with a "generate" field, their captions cached by `skillgpt cache-caption-embeddings` with a (tiny, random)
decoder text encoder, only the signal rows and the output projector trained; the loss falls and the checkpoint
holds generation.safetensors, its parent (stage 1: input projector and, in the tiny preset, the full LLM) recorded."""
from __future__ import annotations

import json

from safetensors.torch import load_file

from skillgpt.config import load_resolved


def test_stage_two_alignment_trains_through_the_cli(nextgpt_run) -> None:
    run = nextgpt_run.stage_2
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line and '"step"' in line]
    assert len(losses) == 4 and losses[-1] < losses[0]
    ckpt = sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    saved = load_file(str(ckpt / "generation.safetensors"))
    assert "rows.embed_delta" in saved and "projectors.image.0.query_embs" in saved
    assert tuple(saved["projectors.image.0.query_embs"].shape) == (1, 77, 16)
    assert not (ckpt / "projector.safetensors").exists() and not (ckpt / "adapter").exists()
    cfg = load_resolved(ckpt / "config.yaml")
    assert cfg.freeze.generation == "full" and cfg.freeze.llm == "frozen" and cfg.freeze.projector == "frozen"
    assert cfg.train.parent.parts == ["projector", "llm"]  # what stage 1 put in, loaded under stage 2's own parts
