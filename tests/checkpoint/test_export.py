"""`skillgpt export`: a LLaVA-shaped checkpoint (the imported LLaVA LoRA fixture: CLIP + mlp2x_gelu + Llama +
LoRA) exported as LlavaForConditionalGeneration loads with transformers alone and gives SkillGPT's logits;
the merged LLM folder generates the adapter run's greedy tokens."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlavaForConditionalGeneration, LlavaProcessor, Qwen2Config,
                          Qwen2ForCausalLM, SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel)

from skillgpt.checkpoint.export import export
from skillgpt.checkpoint.importers import run_import
from skillgpt.data.templates import render, tokenize_conversation
from skillgpt.inference.assistant import SkillAssistant

FIXTURE = Path(__file__).parents[1] / "fixtures" / "llava"
TURNS = [{"from": "human", "value": "<image>\nWhat is the person doing?"}]


def _import(src: Path, out: Path, **options) -> Path:
    """run_import of the LLaVA fixture's base LLM and tower, in float32 (the golden logits are float32)."""
    options = {"base_llm": FIXTURE / "vicuna", "vision_tower": FIXTURE / "clip", "dtype": "float32", **options}
    return run_import("llava", src, out, **options)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    return _import(FIXTURE / "lora", root / "run")


@pytest.fixture(scope="module")
def ours(run) -> SkillAssistant:
    return SkillAssistant(run, device="cpu")


def _prompt(ours: SkillAssistant) -> list[int]:
    return tokenize_conversation(TURNS, ours.tokenizer, ours.template, ours.placeholder_tokens, 4096,
                                 add_generation_prompt=True)["input_ids"]


def test_llava_export_loads_in_transformers_with_skillgpts_logits(run, ours, tmp_path) -> None:
    out = export(run, tmp_path / "llava-hf", "llava")
    hf = LlavaForConditionalGeneration.from_pretrained(out).eval()  # transformers only, no skillgpt class
    processor = LlavaProcessor.from_pretrained(out)
    image_id = hf.config.image_token_id
    ids = _prompt(ours)
    pixels = load_file(str(FIXTURE / "golden.safetensors"))["pixel_values"]  # CLIP-normalised, 56 px
    with torch.no_grad():
        expected = ours.model.causal_lm(
            inputs_embeds=ours.model.embed(torch.tensor([ids]), {"image": pixels.reshape(1, 1, 3, 1, 56, 56)})).logits[0]
        hf_ids = torch.tensor([[image_id if i < 0 else i for i in ids]])
        got = hf(input_ids=hf_ids, pixel_values=pixels).logits[0]
    vocab = expected.shape[-1]
    assert (got[:, :vocab] - expected).abs().max().item() <= 1e-4
    assert got.shape[-1] == vocab + 1  # the added <image> token
    assert hf.config.vision_feature_layer == -2 and hf.config.vision_feature_select_strategy == "default"
    # the processor expands <image> into as many tokens as SkillGPT inserts. It tokenizes the prompt in one
    # piece, as LLaVA-HF does, so a SentencePiece tokenizer puts no "▁" after the image, where LLaVA's
    # tokenizer_image_token (and SkillGPT, which matches it) tokenizes the text after <image> separately.
    text = render(ours.template, TURNS, ours.tokenizer, add_generation_prompt=True)[0]
    from PIL import Image

    enc = processor(text=text, images=Image.new("RGB", (64, 64)), return_tensors="pt")
    assert enc["pixel_values"].shape[-2:] == (56, 56)
    after = max(i for i, t in enumerate(ids) if t < 0) + 1
    # its chat template (for chat APIs) renders the conversation as SkillGPT's vicuna_v1 does
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the person doing?"}]}]
    assert processor.apply_chat_template(chat, add_generation_prompt=True) == text
    assert processor.tokenizer.convert_ids_to_tokens(ids[after]) == "\u2581"
    assert enc["input_ids"][0].tolist() == hf_ids[0, :after].tolist() + hf_ids[0, after + 1:].tolist()


def _export_and_compare(projector: dict[str, torch.Tensor], base_llm: Path, tmp_path: Path,
                        tower: Path = FIXTURE / "clip") -> LlavaForConditionalGeneration:
    """Import `projector` as a LLaVA mm_projector.bin on `base_llm`, export it as LLaVA-HF and check the
    logits of transformers' model against SkillGPT's; returns the exported model."""
    src = tmp_path / "mm_projector.bin"
    torch.save({f"model.mm_projector.{k}": v for k, v in projector.items()}, src)
    run = _import(src, tmp_path / "run", base_llm=base_llm, vision_tower=tower)
    ours = SkillAssistant(run, device="cpu")
    hf = LlavaForConditionalGeneration.from_pretrained(export(run, tmp_path / "hf", "llava")).eval()
    ids, pixels = _prompt(ours), load_file(str(FIXTURE / "golden.safetensors"))["pixel_values"]
    with torch.no_grad():
        expected = ours.model.causal_lm(
            inputs_embeds=ours.model.embed(torch.tensor([ids]), {"image": pixels.reshape(1, 1, 3, 1, 56, 56)})).logits[0]
        got = hf(input_ids=torch.tensor([[hf.config.image_token_id if i < 0 else i for i in ids]]),
                 pixel_values=pixels).logits[0]
    assert (got[:, :expected.shape[-1]] - expected).abs().max().item() <= 1e-4
    return hf


def test_linear_projector_exports_exactly(tmp_path) -> None:
    """A linear projector becomes LLaVA-HF's linear_1 -> identity act -> identity linear_2."""
    torch.manual_seed(0)
    hf = _export_and_compare({"weight": torch.randn(64, 32) * 0.1, "bias": torch.randn(64)}, FIXTURE / "vicuna", tmp_path)
    assert hf.config.projector_hidden_act == "linear"


def test_qwen2_llm_with_tied_embeddings_exports(tmp_path) -> None:
    """A Qwen2 LLM whose head shares the embedding (the added <image> row included)."""
    qwen = tmp_path / "qwen2"
    torch.manual_seed(0)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                 bos_token_id=1, eos_token_id=2)).save_pretrained(qwen)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(FIXTURE / "vicuna" / name, qwen / name)
    mlp = {"0.weight": torch.randn(64, 32) * 0.1, "0.bias": torch.randn(64) * 0.1,
           "2.weight": torch.randn(64, 64) * 0.1, "2.bias": torch.randn(64) * 0.1}
    hf = _export_and_compare(mlp, qwen, tmp_path)
    assert hf.config.text_config.model_type == "qwen2"
    assert hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()


def test_merged_llm_generates_the_adapter_runs_tokens(run, ours, tmp_path) -> None:
    out = export(run, tmp_path / "merged", "merged")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = render(ours.template, [{"from": "human", "value": "Is it hard?"}], ours.tokenizer, add_generation_prompt=True)[0]
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]])
    assert ids[0].tolist() == _prompt_text_ids(ours, text)
    greedy = dict(max_new_tokens=12, do_sample=False, min_new_tokens=12)
    with torch.no_grad():
        expected = ours.model.generate(ids, **greedy)[0].tolist()
        got = merged.generate(ids, attention_mask=torch.ones_like(ids), **greedy)[0, ids.shape[1]:].tolist()
        base = AutoModelForCausalLM.from_pretrained(FIXTURE / "vicuna", dtype=torch.float32).eval()
        assert (base(ids).logits - merged(ids).logits).abs().max() > 1e-3  # the LoRA is really merged in
    assert got == expected
    projector = load_file(str(out / "skillgpt_projector.safetensors"))
    for k, v in ours.model.projector.state_dict().items():
        assert torch.equal(projector[k], v)
    assert (out / "skillgpt_config.yaml").is_file()


def _prompt_text_ids(ours: SkillAssistant, text: str) -> list[int]:
    return tokenize_conversation([{"from": "human", "value": "Is it hard?"}], ours.tokenizer, ours.template,
                                 ours.placeholder_tokens, 4096, add_generation_prompt=True)["input_ids"]


def test_export_refuses_a_model_that_is_not_llava_shaped(run, tmp_path) -> None:
    with pytest.raises(ValueError, match=r"model.encoder.pool is 2"):
        export(run, tmp_path / "x", "llava", overrides=["model.encoder.pool=2"])
    with pytest.raises(ValueError, match="--format"):
        export(run, tmp_path / "y", "onnx")


def test_siglip_tower_exports_with_every_token(tmp_path) -> None:
    """SigLIP has no class token: strategy "full", and the processor adds no extra image token."""
    tower = tmp_path / "siglip"
    torch.manual_seed(0)
    SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                         image_size=56, patch_size=14)).save_pretrained(tower)
    SiglipImageProcessor(size={"height": 56, "width": 56}).save_pretrained(tower)
    hf = _export_and_compare({"weight": torch.randn(64, 32) * 0.1, "bias": torch.randn(64)}, FIXTURE / "vicuna",
                             tmp_path, tower)
    assert hf.config.vision_feature_select_strategy == "full"
    processor = LlavaProcessor.from_pretrained(tmp_path / "hf")
    from PIL import Image

    enc = processor(text="<image>", images=Image.new("RGB", (56, 56)))
    assert enc["input_ids"][0].count(hf.config.image_token_id) == 16


def test_trained_tiny_run_exports_merged_and_is_refused_as_llava(trained_run, tmp_path) -> None:
    """SkillGPT's own two-stage run (stage 1 full LLM, stage 2 LoRA; ImageBind encoder): the merged folder
    continues a video prompt (SkillGPT's embeddings) with the run's greedy tokens; LLaVA-HF cannot hold it."""
    from skillgpt.checkpoint.delta import list_checkpoints
    from skillgpt.data.media import collate_media

    ckpt = list_checkpoints(trained_run.stage_2)[-1]
    out = export(ckpt, tmp_path / "merged", "merged")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    ours = SkillAssistant(ckpt, device="cpu")
    clip = sorted((trained_run.workspace.data / "videos" / "test").glob("*.mp4"))[0]
    ids = torch.tensor([ours.encode([{"from": "human", "value": "<video> Rate this."}], True)["input_ids"]])
    greedy = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
    with torch.no_grad():
        embeds = ours.model.embed(ids, collate_media([ours.load_video(clip)]))
        expected = ours.model.generate(ids, collate_media([ours.load_video(clip)]), **greedy)[0].tolist()
        got = merged.generate(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), **greedy)[0].tolist()
    assert got == expected
    assert set(load_file(str(out / "skillgpt_projector.safetensors"))) == {
        f"video.{k}" for k in ours.model.projector["video"].state_dict()}
    with pytest.raises(ValueError, match="model.encoder.name is 'imagebind'"):
        export(ckpt, tmp_path / "llava", "llava")
