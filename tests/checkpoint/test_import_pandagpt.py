"""PandaGPT and NExT-GPT (encoder side) import: the originals' tiny delta checkpoints (tests/fixtures/pandagpt,
tests/fixtures/nextgpt, made by PandaGPT's own code; see their READMEs) scored through SkillGPT reproduce the
originals' logits and prompt ids, for training and generation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from skillgpt.checkpoint.delta import resolve_checkpoint
from skillgpt.checkpoint.importers import IMPORTERS, run_import
from skillgpt.checkpoint.manifest import verify_manifest
from skillgpt.constants import PLACEHOLDERS
from skillgpt.data.templates import tokenize_conversation
from skillgpt.inference.assistant import SkillAssistant

FIX = Path(__file__).resolve().parents[1] / "fixtures"
PANDA = FIX / "pandagpt"
FIXTURES = {"pandagpt": PANDA, "nextgpt": FIX / "nextgpt"}  # NExT-GPT's delta is for the same tiny base LLM
IB = FIX / "imagebind"
ATOL = 1e-4
# the tiny ImageBind of tests/fixtures/imagebind (PandaGPT's image path runs its vision branch)
SMALL_IMAGEBIND = {"model.encoder": {"vision_width": 64, "vision_layers": 2, "vision_heads": 4, "out_dim": 32,
                                     "audio_width": 48, "audio_layers": 2, "audio_heads": 4},
                   "model.llm.dtype": "float32"}


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def system(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def imported(system: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp(system) / "run"
    return run_import(system, FIXTURES[system] / "pytorch_model.pt", out, PANDA / "vicuna-tiny",
                      encoder=str(IB / "imagebind_small_weights.safetensors"), settings=SMALL_IMAGEBIND)


@pytest.fixture(scope="module")
def assistant(imported: Path) -> SkillAssistant:
    return SkillAssistant(imported, device="cpu")


@pytest.fixture(scope="module")
def reference(system: str) -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES[system] / "reference.safetensors"))


def _image() -> torch.Tensor:
    """The fixture image as SkillGPT's image payload [M=1, S=1, C, T=2, H, W] (ImageBind repeats the frame)."""
    image = load_file(str(IB / "imagebind_small_inputs.safetensors"))["image"][:1]
    return image.unsqueeze(2).expand(-1, -1, 2, -1, -1).unsqueeze(1).contiguous()


def _conversation() -> list[dict[str, str]]:
    turns = json.loads((PANDA / "conversation.json").read_text())
    turns[0] = {**turns[0], "value": "<image>\n" + turns[0]["value"]}
    return turns


def _ids(reference: torch.Tensor) -> list[int]:
    return [PLACEHOLDERS["<image>"] if int(i) == -1 else int(i) for i in reference]


def _logits(assistant: SkillAssistant, ids: list[int]) -> torch.Tensor:
    model = assistant.model
    input_ids = torch.tensor([ids])
    with torch.no_grad():
        embeds = model.embed(input_ids, {"image": _image()})
        return model.causal_lm(inputs_embeds=embeds, attention_mask=torch.ones_like(input_ids)).logits.float()


def test_registry_names_every_system() -> None:
    assert set(IMPORTERS) == {"pandagpt", "nextgpt", "llava", "minigpt4", "minigpt_v2", "videogpt_plus"}


def test_written_checkpoint_is_complete(imported: Path) -> None:
    ckpt = imported / "checkpoint-0"
    assert (ckpt / "COMPLETE").is_file() and (ckpt / "MANIFEST.json").is_file()
    assert (ckpt / "projector.safetensors").is_file() and (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    adapter_cfg = json.loads((ckpt / "adapter" / "adapter_config.json").read_text())
    assert (adapter_cfg["r"], adapter_cfg["lora_alpha"], adapter_cfg["lora_dropout"]) == (32, 32, 0.1)
    assert sorted(adapter_cfg["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert not list(ckpt.rglob("*.pt")) and not list(ckpt.rglob("*.bin"))  # safetensors only
    assert verify_manifest(ckpt) is None and resolve_checkpoint(imported) == ckpt  # usable as train.init_from


def test_training_prompt_ids_equal_the_original(assistant: SkillAssistant, reference: dict) -> None:
    tok = tokenize_conversation(_conversation(), assistant.tokenizer, assistant.template, {"<image>": 1}, 4096)
    assert tok["input_ids"] == _ids(reference["input_ids"])
    assert tok["labels"] == [int(i) for i in reference["labels"]]  # the supervised tokens: each answer + "\n###"


def test_generation_prompt_ids_equal_the_original(assistant: SkillAssistant, reference: dict) -> None:
    tok = tokenize_conversation(_conversation()[:3], assistant.tokenizer, assistant.template, {"<image>": 1}, 4096,
                                add_generation_prompt=True)
    assert tok["input_ids"] == _ids(reference["generation_input_ids"])


def test_image_embedding_equals_the_original(assistant: SkillAssistant, reference: dict) -> None:
    with torch.no_grad():
        feats = assistant.model.encode("image", _image())["video"]
    torch.testing.assert_close(feats[:, 0].float(), reference["vision_embedding"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("ids_key,logits_key", [("input_ids", "logits"),
                                                ("generation_input_ids", "generation_logits")])
def test_logits_equal_the_original(assistant: SkillAssistant, reference: dict, ids_key: str, logits_key: str) -> None:
    got = _logits(assistant, _ids(reference[ids_key]))
    want = reference[logits_key]
    assert got.shape == want.shape
    diff = (got - want).abs().max().item()
    assert diff <= ATOL, f"max |logit difference| {diff:.2e} > {ATOL}"
    assert (want - want.mean()).abs().max() > 1.0  # the reference is not trivial


def test_missing_base_llm_and_unknown_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--base-llm"):
        run_import("pandagpt", PANDA / "pytorch_model.pt", tmp_path / "a")
    state = torch.load(PANDA / "pytorch_model.pt", weights_only=True)
    state["llama_model.base_model.model.model.layers.0.mlp.gate_proj.weight"] = torch.zeros(2, 2)
    del state["llama_proj.bias"]
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"unknown keys \['llama_model.*gate_proj.*missing keys \['llama_proj.bias"):
        run_import("pandagpt", bad, tmp_path / "b", PANDA / "vicuna-tiny")
    assert not (tmp_path / "b" / "checkpoint-0").exists()


def test_pickled_code_is_not_executed(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # would run on a plain torch.load
            return (print, ("executed",))

    path = tmp_path / "evil.pt"
    torch.save({"llama_proj.weight": Evil()}, path)
    with pytest.raises(ValueError, match="without running pickled code"):
        run_import("pandagpt", path, tmp_path / "c", PANDA / "vicuna-tiny")


def test_nextgpt_vocabulary_and_output_projectors(tmp_path: Path) -> None:
    """The fixture's gen_text_hidden_fcs* are linear TextFcLayers (Linear(64, 8)): they land in
    generation.safetensors and config.yaml's model.generation (the decoder side: test_import_nextgpt_decoder.py)."""
    run = run_import("nextgpt", FIXTURES["nextgpt"] / "pytorch_model.pt", tmp_path / "run", PANDA / "vicuna-tiny",
                     encoder=str(IB / "imagebind_small_weights.safetensors"), settings=SMALL_IMAGEBIND)
    ckpt = run / "checkpoint-0"
    info = json.loads((ckpt / "import.json").read_text())
    assert info["generation"] == ["audio", "image", "video"]
    from skillgpt.config import load_resolved
    from skillgpt.models.llm import load_tokenizer

    cfg = load_resolved(ckpt / "config.yaml")
    assert Path(cfg.model.llm.path) == (ckpt / "base-llm").absolute()
    tok = load_tokenizer(cfg.model.llm.path)
    assert len(tok) == 600 + 38 and len(tok("[VID23]", add_special_tokens=False).input_ids) == 1
    gen = cfg.model.generation
    assert (gen.image_tokens, gen.video_tokens, gen.audio_tokens, gen.projector) == (4, 24, 8, "linear")
    assert (list(gen.image_shape), list(gen.video_shape), list(gen.audio_shape)) == ([77, 8], [77, 8], [1, 8])
    assert cfg.freeze.generation == "full" and list(gen.llm_layers) == [-1]
    state = load_file(str(ckpt / "generation.safetensors"))
    source = torch.load(FIXTURES["nextgpt"] / "pytorch_model.pt", weights_only=True)
    torch.testing.assert_close(state["projectors.video.0.model.weight"],
                               source["gen_text_hidden_fcs_video.0.model.weight"].float(), rtol=0, atol=0)
    assert state["rows.embed_delta"].shape == (36, 64) and state["rows.head_delta"].shape == (36, 64)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from skillgpt.cli import main

    small = [f"--set=model.encoder.{k}={v}" for k, v in SMALL_IMAGEBIND["model.encoder"].items()]
    code = main(["import-weights", "--from", "pandagpt", str(PANDA), "--base-llm", str(PANDA / "vicuna-tiny"),
                 "--encoder", str(IB / "imagebind_small_weights.safetensors"), *small, "--out", str(tmp_path / "run")])
    assert code == 0 and "checkpoint" not in capsys.readouterr().err
    assert (tmp_path / "run" / "checkpoint-0" / "COMPLETE").is_file()
    code = main(["import-weights", "--from", "pandagpt", str(PANDA), "--out", str(tmp_path / "again")])
    assert code == 2 and "--base-llm" in capsys.readouterr().err
