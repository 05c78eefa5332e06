"""MiniGPT-4 / MiniGPT-v2 import: the original's golden logits and prompt ids (tests/fixtures/minigpt4 and
minigpt_v2, made by MiniGPT-4's own code) are reproduced by the imported SkillGPT checkpoints."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from skillgpt.checkpoint.importers import run_import
from skillgpt.data.templates import tokenize_conversation
from skillgpt.inference.assistant import SkillAssistant

FIXTURES = Path(__file__).parents[1] / "fixtures"
M4, V2 = FIXTURES / "minigpt4", FIXTURES / "minigpt_v2"
TINY = {"vit": M4 / "eva_vit_g.pth", "vision_layers": 2, "vision_heads": 4}  # the fixtures' tiny ViT (README)
IMAGE = -1  # the fixtures' id for an image token row


def _import(kind: str, out: Path, **changes) -> Path:
    if kind == "minigpt4":
        options = {**TINY, "qformer": M4 / "blip2_pretrained.pth", "qformer_heads": 4, **changes}
        return run_import("minigpt4", M4 / "pretrained_minigpt4.pth", out, base_llm=M4 / "llama", **options)
    return run_import("minigpt_v2", V2 / "minigptv2_checkpoint.pth", out, base_llm=M4 / "llama", **{**TINY, **changes})


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> dict[str, SkillAssistant]:
    root = tmp_path_factory.mktemp("minigpt")
    return {kind: SkillAssistant(_import(kind, root / kind), device="cpu") for kind in ("minigpt4", "minigpt_v2")}


def _golden(kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    folder = M4 if kind == "minigpt4" else V2
    return load_file(str(folder / "golden.safetensors")), json.loads((folder / "golden.json").read_text())


def _conversation(meta: dict, turns: int, generation: bool) -> list[dict[str, str]]:
    out = []
    for i, (q, a) in enumerate(meta["turns"][:turns]):
        out.append({"from": "human", "value": ("<image>\n" if i == 0 else "") + q})
        if not (generation and i == turns - 1):
            out.append({"from": "gpt", "value": a})
    return out


def _ids(assistant: SkillAssistant, kind: str, path: str, tokenizer=None) -> list[int]:
    """SkillGPT's prompt ids of the fixture's conversation: `generation` = the Chat prompt of the second turn,
    `train` = the training sample (MiniGPT-4 stage 2 trains one turn, MiniGPT-v2 conversations)."""
    _, meta = _golden(kind)
    turns = 1 if (kind, path) == ("minigpt4", "train") else 2
    conv = _conversation(meta, turns, path == "generation")
    return tokenize_conversation(conv, tokenizer or assistant.tokenizer, assistant.template, assistant.placeholder_tokens,
                                 4096, add_generation_prompt=path == "generation")["input_ids"]


def _as_fixture(ids: list[int]) -> list[int]:
    return [IMAGE if i < 0 else i for i in ids]


@pytest.mark.parametrize("path", ["generation", "train"])
def test_minigpt4_prompt_ids_equal_originals(imported, path) -> None:
    golden, _ = _golden("minigpt4")
    assert _as_fixture(_ids(imported["minigpt4"], "minigpt4", path)) == golden[f"input_ids_{path}"].tolist()


@pytest.mark.parametrize("path", ["generation", "train"])
def test_minigpt_v2_prompt_ids_with_the_originals_tokenizer(imported, path) -> None:
    """MiniGPT-v2 ran transformers 4.30, whose slow LlamaTokenizer always put SentencePiece's word-start marker
    after a special token written in the text ('<s>[INST] ' of every turn); with that tokenizer behaviour
    (legacy=True) the minigpt_v2 template renders the original's ids."""
    golden, _ = _golden("minigpt_v2")
    legacy = AutoTokenizer.from_pretrained(str(M4 / "llama"), legacy=True)
    assert _as_fixture(_ids(imported["minigpt_v2"], "minigpt_v2", path, legacy)) == golden[f"input_ids_{path}"].tolist()


@pytest.mark.parametrize("kind", ["minigpt4", "minigpt_v2"])
def test_training_labels_equal_originals(imported, kind) -> None:
    """The supervised tokens (answers + end_sym) are the original's labels of its training forward."""
    golden, meta = _golden(kind)
    conv = _conversation(meta, 1 if kind == "minigpt4" else 2, False)
    ours = imported[kind]
    labels = tokenize_conversation(conv, ours.tokenizer, ours.template, ours.placeholder_tokens, 4096)["labels"]
    assert labels == golden["labels_train"].tolist()


@pytest.mark.parametrize("path", ["generation", "train"])
def test_minigpt_v2_prompt_ids_with_the_llms_own_tokenizer(imported, path) -> None:
    """Whatever the tokenizer's legacy flag (the fixture's says false): the templates tokenize the text after a
    written <s> on its own (it failed before eda6c79: one marker token short per '<s>[INST] ')."""
    golden, _ = _golden("minigpt_v2")
    assert _as_fixture(_ids(imported["minigpt_v2"], "minigpt_v2", path)) == golden[f"input_ids_{path}"].tolist()


@pytest.mark.parametrize("kind", ["minigpt4", "minigpt_v2"])
@pytest.mark.parametrize("path", ["generation", "train"])
def test_logits_equal_originals(imported, kind, path) -> None:
    """The original's prompt ids (image rows -> SkillGPT's placeholder) through the imported model."""
    ours = imported[kind]
    golden, _ = _golden(kind)
    placeholder = min(_ids(ours, kind, "generation"))
    ids = torch.tensor([[placeholder if i == IMAGE else i for i in golden[f"input_ids_{path}"].tolist()]])
    pixels = golden["pixel_values"]
    with torch.no_grad():
        embeds = ours.model.embed(ids, {"image": pixels.reshape(1, 1, 3, 1, *pixels.shape[-2:])})
        logits = ours.model.causal_lm(inputs_embeds=embeds).logits[0]
    expected = golden[f"logits_{path}"]
    assert logits.shape == expected.shape
    assert (logits - expected).abs().max().item() <= 1e-4


def test_imported_settings(imported) -> None:
    m4, v2 = imported["minigpt4"].cfg, imported["minigpt_v2"].cfg
    assert (m4.model.llm.template, m4.model.encoder.name, m4.model.encoder.merge_tokens) == ("minigpt4", "eva_clip", 1)
    assert (m4.freeze.llm, m4.model.projector.name, m4.data.video.resolution) == ("frozen", "linear", 28)
    assert (v2.model.llm.template, v2.model.encoder.qformer, v2.model.encoder.merge_tokens) == ("minigpt_v2", None, 4)
    lora = v2.model.llm.lora
    assert (v2.freeze.llm, lora.r, lora.alpha, sorted(lora.target_modules)) == ("lora", 64, 16, ["q_proj", "v_proj"])


def test_lora_alpha_from_the_checkpoints_config(tmp_path) -> None:
    """LoRA alpha comes from the checkpoint's config (16 in the fixture), written into the adapter folder."""
    raw = torch.load(V2 / "minigptv2_checkpoint.pth", weights_only=True)
    raw["config"]["model"]["lora_alpha"] = 64
    src = tmp_path / "v2.pth"
    torch.save(raw, src)
    run = run_import("minigpt_v2", src, tmp_path / "run", base_llm=M4 / "llama", **TINY)
    adapter = json.loads((run / "checkpoint-0" / "adapter" / "adapter_config.json").read_text())
    assert (adapter["r"], adapter["lora_alpha"], sorted(adapter["target_modules"])) == (64, 64, ["q_proj", "v_proj"])


def test_lora_keys_of_newer_peft(tmp_path) -> None:
    """A run saved with peft >= 0.3 (adapter name '.default' in the keys) imports the same adapter."""
    raw = torch.load(V2 / "minigptv2_checkpoint.pth", weights_only=True)
    raw["model"] = {k.replace(".weight", ".default.weight") if ".lora_" in k else k: v for k, v in raw["model"].items()}
    src = tmp_path / "v2.pth"
    torch.save(raw, src)
    run = run_import("minigpt_v2", src, tmp_path / "run", base_llm=M4 / "llama", **TINY)
    saved = load_file(str(run / "checkpoint-0" / "adapter" / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert len(saved) == 8 and torch.equal(saved[key], raw["model"]["llama_model." + key.replace(".weight", ".default.weight")])


def test_template_from_model_type_and_option(tmp_path) -> None:
    raw = torch.load(M4 / "pretrained_minigpt4.pth", weights_only=True)
    raw["config"]["model"]["model_type"] = "pretrain_llama2"
    src = tmp_path / "m4.pth"
    torch.save(raw, src)
    run = run_import("minigpt4", src, tmp_path / "a", base_llm=M4 / "llama", qformer=M4 / "blip2_pretrained.pth", qformer_heads=4, **TINY)
    assert "template: minigpt4_llama2" in (run / "checkpoint-0" / "config.yaml").read_text()
    raw["config"] = {}
    torch.save(raw, src)
    with pytest.raises(ValueError, match="cannot tell the template.*--set model.llm.template=minigpt4"):
        run_import("minigpt4", src, tmp_path / "b", base_llm=M4 / "llama", qformer=M4 / "blip2_pretrained.pth", **TINY)
    run = run_import("minigpt4", src, tmp_path / "c", base_llm=M4 / "llama", qformer=M4 / "blip2_pretrained.pth",
                     qformer_heads=4, template="minigpt4", image_size=28, **TINY)
    assert "template: minigpt4\n" in (run / "checkpoint-0" / "config.yaml").read_text()


def test_bad_inputs_are_named(tmp_path) -> None:
    raw = torch.load(M4 / "pretrained_minigpt4.pth", weights_only=True)
    raw["model"]["Qformer.bert.encoder.layer.0.output_query.dense.weight"] = torch.zeros(2, 2)
    del raw["model"]["llama_proj.bias"]
    src = tmp_path / "m4.pth"
    torch.save(raw, src)
    with pytest.raises(ValueError, match=r"unknown keys \['Qformer.bert.*missing keys \['llama_proj.bias'\]"):
        run_import("minigpt4", src, tmp_path / "run", base_llm=M4 / "llama", qformer=M4 / "blip2_pretrained.pth", **TINY)
    with pytest.raises(FileNotFoundError, match=r"--set model.encoder.qformer=FILE"):
        run_import("minigpt4", M4 / "pretrained_minigpt4.pth", tmp_path / "run", base_llm=M4 / "llama", **TINY)
    with pytest.raises(FileNotFoundError, match="--base-llm"):
        run_import("minigpt_v2", V2 / "minigptv2_checkpoint.pth", tmp_path / "run", **TINY)
    raw = torch.load(M4 / "pretrained_minigpt4.pth", weights_only=True)
    raw["model"]["llama_proj.weight"] = torch.zeros(64, 48)
    torch.save(raw, src)
    with pytest.raises(ValueError, match="llama_proj maps 48 -> 64, but the visual path gives 32"):
        run_import("minigpt4", src, tmp_path / "run", base_llm=M4 / "llama", qformer=M4 / "blip2_pretrained.pth", **TINY)
    with pytest.raises(FileNotFoundError, match="EVA-CLIP ViT-g .* give it as --encoder FILE"):
        run_import("minigpt_v2", V2 / "minigptv2_checkpoint.pth", tmp_path / "run", base_llm=M4 / "llama",
                   vision_layers=2, vision_heads=4)
    with pytest.raises(ValueError, match="no LoRA weights"):
        run_import("minigpt_v2", M4 / "pretrained_minigpt4.pth", tmp_path / "run", base_llm=M4 / "llama", **TINY)
    with pytest.raises(ValueError, match="unknown options"):
        run_import("minigpt_v2", V2 / "minigptv2_checkpoint.pth", tmp_path / "run", base_llm=M4 / "llama", qformer="x", **TINY)


def test_command_line_options(tmp_path, monkeypatch) -> None:
    """`import-weights --encoder VIT --set model.encoder.qformer=... --set ...` reach the same checkpoint."""
    monkeypatch.chdir(M4)
    settings = {"model.encoder.qformer": "blip2_pretrained.pth", "model.encoder.vision_layers": 2,
                "model.encoder.vision_heads": 4, "model.encoder.qformer_heads": 4, "model.llm.max_length": 300}
    run = run_import("minigpt4", M4 / "pretrained_minigpt4.pth", tmp_path / "run", base_llm=M4 / "llama",
                     encoder=str(M4 / "eva_vit_g.pth"), settings=settings)
    text = (run / "checkpoint-0" / "config.yaml").read_text()
    assert "qformer_heads: 4" in text and "max_length: 300" in text
    assert f"qformer: {(M4 / 'blip2_pretrained.pth').absolute()}" in text  # a relative --set path made absolute


def test_train_init_from_the_imported_run(tmp_path) -> None:
    """A later stage starting from the imported MiniGPT-v2 run (train.init_from) gets its projector, and its LoRA
    merged into the base weights (alpha 16 / r 64), as SkillGPT starts a stage from an earlier stage's LoRA."""
    from skillgpt.config import load_resolved
    from skillgpt.models.build import build_model

    run = _import("minigpt_v2", tmp_path / "run")
    cfg = load_resolved(run / "checkpoint-0" / "config.yaml", [f"train.init_from={run}"])
    model, _ = build_model(cfg)
    raw = torch.load(V2 / "minigptv2_checkpoint.pth", weights_only=True)["model"]
    assert torch.equal(model.projector["video"].weight, raw["llama_proj.weight"])
    lora = "llama_model.base_model.model.model.layers.1.self_attn.v_proj.lora_{}.weight"
    base = load_file(str(M4 / "llama" / "model.safetensors"))["model.layers.1.self_attn.v_proj.weight"]
    merged = base + 16 / 64 * raw[lora.format("B")] @ raw[lora.format("A")]
    built = next(p for n, p in model.llm.named_parameters() if "layers.1.self_attn.v_proj" in n and "lora_" not in n)
    assert (built - merged).abs().max().item() <= 1e-6


@pytest.mark.parametrize("kind,size", [("minigpt4", 28), ("minigpt_v2", 56)])
def test_image_pixels_as_blip2_eval_processor(imported, kind, size) -> None:
    """The imported run's data pipeline gives a (non-square) image the pixels MiniGPT's Blip2ImageEvalProcessor
    gives it (resize to a square, bicubic, no crop; CLIP mean/std): within 2 uint8 levels (resampling code
    differs: torchvision on uint8 tensors vs PIL), mean difference far below one level."""
    from skillgpt.data.media import MediaItem, load_media

    ours = load_media(MediaItem("image", (M4 / "image.png",)), imported[kind].cfg.data).reshape(3, size, size)
    expected = load_file(str(M4 / "processor_golden.safetensors"))[f"pixels_{size}"]
    level = 1 / 255 / 0.2613  # one uint8 step in normalised units (the smallest CLIP std)
    assert (ours - expected).abs().max().item() <= 2.5 * level
    assert (ours - expected).abs().mean().item() <= 0.1 * level
