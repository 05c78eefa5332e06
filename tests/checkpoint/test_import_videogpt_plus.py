"""VideoGPT+ import: a tiny run made and scored by VideoGPT+'s own code (tests/fixtures/videogpt_plus/model) gives
the same prompt ids and logits once imported: InternVideo2 + CLIP towers, both project-then-pool projectors,
context tokens first, LoRA merged by the original and kept as an adapter here, the phi3_instruct template."""
from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skillgpt.checkpoint.importers import run_import
from skillgpt.data.templates import tokenize_conversation
from skillgpt.inference.assistant import SkillAssistant

FIXTURE = Path(__file__).parents[1] / "fixtures" / "videogpt_plus"
MODEL = FIXTURE / "model"
GOLDEN = json.loads((MODEL / "golden.json").read_text())
IMAGE = -200  # VideoGPT+'s IMAGE_TOKEN_INDEX: one per frame in its prompt


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The fixture's towers decompressed and its base LLM with the Phi-3 stand-in tokenizer, as a user has them."""
    root = tmp_path_factory.mktemp("videogpt_plus")
    tower = root / "InternVideo2-stage2-tiny-1408.pt"
    tower.write_bytes(lzma.decompress((MODEL / "InternVideo2-stage2-tiny-1408.pt.xz").read_bytes()))
    clip = root / "clip-tiny-1024"
    shutil.copytree(MODEL / "clip-tiny-1024", clip, ignore=shutil.ignore_patterns("*.xz"))
    (clip / "model.safetensors").write_bytes(lzma.decompress((MODEL / "clip-tiny-1024" / "model.safetensors.xz").read_bytes()))
    base = root / "phi3-tiny"
    shutil.copytree(MODEL / "phi3-tiny", base)
    for f in (FIXTURE / "phi3_tokenizer").iterdir():
        shutil.copy(f, base / f.name)
    return {"tower": tower, "clip": clip, "base": base, "root": root}


@pytest.fixture(scope="module")
def assistant(files) -> SkillAssistant:
    run = run_import("videogpt_plus", MODEL / "videogpt_plus_tiny_lora", files["root"] / "run", files["base"],
                     encoder=files["tower"], context_encoder=files["clip"], dtype="float32",
                     settings={"data.video.num_clips": 2, "model.context.frames": GOLDEN["frames"]})
    return SkillAssistant(run, device="cpu")


def _turns(generation: bool) -> list[dict[str, str]]:
    turns = []
    for i, (q, a) in enumerate(GOLDEN["turns"]):
        turns.append({"from": "human", "value": q.replace("<image>" * GOLDEN["frames"], "<video>")})
        if not (generation and i == len(GOLDEN["turns"]) - 1):
            turns.append({"from": "gpt", "value": a})
    return turns


def _ids(assistant: SkillAssistant, generation: bool) -> list[int]:
    return tokenize_conversation(_turns(generation), assistant.tokenizer, assistant.template,
                                 assistant.placeholder_tokens, 4096, add_generation_prompt=generation)["input_ids"]


@pytest.mark.parametrize("generation", [False, True], ids=["full", "generation"])
def test_prompt_ids_equal_the_originals(assistant, generation) -> None:
    ids = _ids(assistant, generation)
    n = assistant.placeholder_tokens["<video>"]
    assert n == GOLDEN["visual_tokens"] == 8 * 144 + 8 * 64  # context images first, then the video frames
    first = ids.index(next(i for i in ids if i < 0))
    collapsed = ids[:first] + [IMAGE] * GOLDEN["frames"] + ids[first + n:]
    assert collapsed == GOLDEN[f"input_ids_{'generation' if generation else 'full'}"]


def test_logits_equal_the_originals(assistant) -> None:
    golden = load_file(str(MODEL / "golden.safetensors"))
    mean, std = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in ((0.485, 0.456, 0.406),
                                                                                 (0.229, 0.224, 0.225)))
    frames = ((golden["video_resized"].double() / 255.0 - mean) / std).float()  # [8, 3, 224, 224]
    video = frames.reshape(1, 2, 4, 3, 224, 224).transpose(2, 3)  # [items, clips, C, T, H, W]
    ids = torch.tensor([_ids(assistant, False)])
    with torch.no_grad():
        logits = assistant.model.causal_lm(inputs_embeds=assistant.model.embed(ids, {"video": video})).logits[0]
    assert list(logits.shape) == GOLDEN["logits_shape"]
    first, n = GOLDEN["first_visual"], GOLDEN["visual_tokens"]
    text = torch.cat([logits[:first], logits[first + n:]])
    assert (text - golden["logits_text"]).abs().max().item() <= 1e-4


def test_settings_follow_the_run(assistant) -> None:
    cfg = assistant.cfg
    assert (cfg.model.llm.lora.r, cfg.model.llm.lora.alpha) == (16, 32)
    assert sorted(cfg.model.llm.lora.target_modules) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert (cfg.model.projector.pool, cfg.model.context.projector.pool) == (2, 2)  # 16 -> 8, 24 -> 12
    assert cfg.model.projector.pool_after_mlp and cfg.model.context.position == "before"
    assert (cfg.model.llm.template, cfg.data.video.processor, cfg.data.video.sampling) == (
        "phi3_instruct", "internvideo2", "videogpt_plus")


def test_missing_towers_and_bad_files_are_named(files, tmp_path) -> None:
    src = MODEL / "videogpt_plus_tiny_lora"
    with pytest.raises(FileNotFoundError, match="--encoder FILE"):
        run_import("videogpt_plus", src, tmp_path / "a", files["base"], context_encoder=files["clip"])
    with pytest.raises(FileNotFoundError, match="--context-encoder DIR"):
        run_import("videogpt_plus", src, tmp_path / "b", files["base"], encoder=files["tower"])
    with pytest.raises(FileNotFoundError, match="--base-llm"):
        run_import("videogpt_plus", src, tmp_path / "c", None, encoder=files["tower"], context_encoder=files["clip"])
    bad = tmp_path / "mm_projector.bin"
    torch.save({"model.mm_projector.0.weight": torch.zeros(64, 1408)}, bad)
    with pytest.raises(ValueError, match="missing keys"):
        run_import("videogpt_plus", bad, tmp_path / "d", files["base"], encoder=files["tower"],
                   context_encoder=files["clip"], image_projector=bad)
