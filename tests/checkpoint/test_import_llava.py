"""LLaVA-1.5 import: the original's golden logits and prompt ids (tests/fixtures/llava, made by LLaVA's own
code) are reproduced by the imported SkillGPT checkpoint, for a projector-only run and a LoRA run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from skillgpt.checkpoint.importers import run_import
from skillgpt.config import load_resolved
from skillgpt.data.templates import tokenize_conversation
from skillgpt.inference.assistant import SkillAssistant

FIXTURE = Path(__file__).parents[1] / "fixtures" / "llava"
LLAVA_IMAGE = -200  # LLaVA's IMAGE_TOKEN_INDEX: one id per image in its prompt ids


def _import(src: Path, out: Path, **options) -> Path:
    """run_import of the LLaVA fixture's base LLM and tower, in float32 (the golden logits are float32)."""
    options = {"base_llm": FIXTURE / "vicuna", "vision_tower": FIXTURE / "clip", "dtype": "float32", **options}
    return run_import("llava", src, out, **options)


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "golden.safetensors"))


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, SkillAssistant]:
    root = tmp_path_factory.mktemp("llava")
    out = {}
    for case in ("projector", "lora"):
        run = _import(FIXTURE / case, root / case)
        out[case] = SkillAssistant(run, device="cpu")
    return out


def _conversation(generation: bool) -> list[dict[str, str]]:
    meta = json.loads((FIXTURE / "golden.json").read_text())
    turns = []
    for i, (q, a) in enumerate(meta["turns"]):
        turns.append({"from": "human", "value": q})
        if not (generation and i == len(meta["turns"]) - 1):
            turns.append({"from": "gpt", "value": a})
    return turns


def _ids(assistant: SkillAssistant, generation: bool) -> list[int]:
    return tokenize_conversation(_conversation(generation), assistant.tokenizer, assistant.template,
                                 assistant.placeholder_tokens, 4096, add_generation_prompt=generation)["input_ids"]


def _collapsed(ids: list[int], n: int) -> list[int]:
    """SkillGPT's run of n image placeholder ids as LLaVA's single IMAGE_TOKEN_INDEX."""
    out, i = [], 0
    while i < len(ids):
        if ids[i] < 0:
            assert ids[i:i + n] == [ids[i]] * n
            out.append(LLAVA_IMAGE)
            i += n
        else:
            out.append(ids[i])
            i += 1
    return out


@pytest.mark.parametrize("generation", [False, True], ids=["full", "generation"])
def test_prompt_ids_equal_llavas(imported, golden, generation) -> None:
    ours = imported["projector"]
    n = ours.placeholder_tokens["<image>"]
    assert n == 16  # 56 px / 14 px patches = 4 x 4, class token dropped
    expected = golden[f"input_ids_{'generation' if generation else 'full'}"].tolist()
    assert _collapsed(_ids(ours, generation), n) == expected


@pytest.mark.parametrize("case", ["projector", "lora"])
def test_logits_equal_llavas(imported, golden, case) -> None:
    ours = imported[case]
    ids = torch.tensor([_ids(ours, False)])
    image = golden["pixel_values"].reshape(1, 1, 3, 1, 56, 56)  # [items, clips, C, T, H, W]
    with torch.no_grad():
        logits = ours.model.causal_lm(inputs_embeds=ours.model.embed(ids, {"image": image})).logits[0]
    expected = golden[f"logits_{case}"]
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max().item() <= 1e-4


def test_lora_run_settings_come_from_adapter_config(imported) -> None:
    cfg = imported["lora"].cfg
    assert (cfg.model.llm.lora.r, cfg.model.llm.lora.alpha) == (128, 256)
    assert sorted(cfg.model.llm.lora.target_modules) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert (cfg.model.encoder.select_layer, cfg.model.encoder.keep_cls, cfg.model.llm.template) == (-2, False, "vicuna_v1")


def test_adapter_bin_and_projector_file(tmp_path, golden) -> None:
    """adapter_model.bin (older peft) and a bare mm_projector.bin path import the same weights."""
    lora = tmp_path / "lora"
    shutil.copytree(FIXTURE / "lora", lora)
    weights = load_file(str(lora / "adapter_model.safetensors"))
    (lora / "adapter_model.safetensors").unlink()
    torch.save(weights, lora / "adapter_model.bin")
    run = _import(lora, tmp_path / "run")
    saved = load_file(str(run / "checkpoint-0" / "adapter" / "adapter_model.safetensors"))
    assert saved.keys() == {k for k in weights if ".vision_tower." not in k}  # untrained tower LoRA dropped
    run2 = _import(FIXTURE / "projector" / "mm_projector.bin", tmp_path / "run2")
    assert sorted(load_file(str(run2 / "checkpoint-0" / "projector.safetensors"))) == [
        "video.0.bias", "video.0.weight", "video.2.bias", "video.2.weight"]


def test_linear_projector_and_options(tmp_path) -> None:
    src = tmp_path / "mm_projector.bin"
    torch.save({"model.mm_projector.weight": torch.randn(64, 32), "model.mm_projector.bias": torch.randn(64)}, src)
    run = run_import("llava", src, tmp_path / "run", base_llm=FIXTURE / "vicuna", encoder=FIXTURE / "clip",
                     settings={"model.llm.max_length": 1024})
    cfg = load_resolved(run / "checkpoint-0" / "config.yaml")
    # the dtype defaults to the base LLM's (float16, as Vicuna's config.json says)
    assert (cfg.model.projector.name, cfg.model.llm.dtype, cfg.model.llm.max_length) == ("linear", "float16", 1024)
    run = run_import("llava", src, tmp_path / "run3", base_llm=FIXTURE / "vicuna", encoder=FIXTURE / "clip",
                     dtype="bfloat16")
    assert load_resolved(run / "checkpoint-0" / "config.yaml").model.encoder.dtype == "bfloat16"
    with pytest.raises(ValueError, match=r"unknown options \['lora_alpha'\]"):
        _import(src, tmp_path / "run2", lora_alpha=3)


def test_bad_inputs_are_named(tmp_path) -> None:
    src = tmp_path / "mm_projector.bin"
    torch.save({"model.mm_projector.0.weight": torch.randn(64, 32), "model.embed_tokens.weight": torch.randn(3, 64)}, src)
    with pytest.raises(ValueError, match=r"unknown keys \['model.embed_tokens.weight'\].*missing keys"):
        _import(src, tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="vision tower.*clip-vit-tiny-56"):
        run_import("llava", FIXTURE / "projector", tmp_path / "run", base_llm=FIXTURE / "vicuna")
    with pytest.raises(FileNotFoundError, match="--base-llm"):
        run_import("llava", FIXTURE / "projector", tmp_path / "run", vision_tower=FIXTURE / "clip", dtype="float32")
    wide = tmp_path / "wide.bin"
    torch.save({"model.mm_projector.weight": torch.randn(64, 48), "model.mm_projector.bias": torch.randn(64)}, wide)
    with pytest.raises(ValueError, match="maps 48 -> 64.*32 wide"):
        _import(wide, tmp_path / "run")


def test_trained_tower_lora_is_refused(tmp_path) -> None:
    lora = tmp_path / "lora"
    shutil.copytree(FIXTURE / "lora", lora)
    weights = load_file(str(lora / "adapter_model.safetensors"))
    key = next(k for k in weights if ".vision_tower." in k and k.endswith("lora_B.weight"))
    weights[key] = torch.ones_like(weights[key])
    save_file(weights, str(lora / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="LoRA on the vision tower was trained"):
        _import(lora, tmp_path / "run")


def test_imported_run_is_a_train_init_from_parent(tmp_path) -> None:
    """A later stage starts from the import: the recorded parent's projector and LoRA (merged) are loaded."""
    from skillgpt.checkpoint.lineage import record_lineage
    from skillgpt.models.build import build_model

    run = _import(FIXTURE / "lora", tmp_path / "run")
    cfg = load_resolved(run / "checkpoint-0" / "config.yaml")
    cfg.train.init_from = str(run)
    cfg = record_lineage(cfg, tmp_path / "stage")
    model, _ = build_model(cfg)
    imported = SkillAssistant(run, device="cpu")
    ids = torch.tensor([[1, 268, 273, 286, 281]])
    with torch.no_grad():
        assert (model.causal_lm(ids).logits - imported.model.causal_lm(ids).logits).abs().max() <= 1e-5
    for k, v in imported.model.projector.state_dict().items():
        assert torch.equal(model.projector.state_dict()[k], v)
