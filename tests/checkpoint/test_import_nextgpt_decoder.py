"""`import-weights --from nextgpt`, decoder side: a NExT-GPT-layout delta whose gen_text_hidden_fcs.0.* are the
weights of the ORIGINAL TextFcLayer (tests/fixtures/nextgpt/output_projector, golden outputs made by NExT-GPT's own
code) imports into a run that SkillGPT loads; its output projector reproduces the original's output and its
signal-token rows are the stored ones.

The delta is written here with NExT-GPT's key names (agent.save_model; the layout of
tests/fixtures/nextgpt/pytorch_model.pt) for a tiny random Llama of width 32, the golden projector's in_dim (the
fixture's Vicuna is 64 wide). The stored [IMG0..3] embedding rows are the golden `inputs.input_embs[0]`, so the
run's own embeddings of its signal tokens fed to its projector must give the golden `outputs.reference[0]`.
"""
from __future__ import annotations

import json
import lzma
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, load_file

from skillgpt.checkpoint.importers import run_import
from skillgpt.config import load_resolved
from skillgpt.inference.assistant import SkillAssistant

FIX = Path(__file__).resolve().parents[1] / "fixtures"
PANDA, IB, GOLDEN = FIX / "pandagpt", FIX / "imagebind", FIX / "nextgpt" / "output_projector"
FILES = {"linear": "linear.safetensors", "transformer": "transformer.safetensors.xz"}
SMALL_IMAGEBIND = {"model.encoder": {"vision_width": 64, "vision_layers": 2, "vision_heads": 4, "out_dim": 32,
                                     "audio_width": 48, "audio_layers": 2, "audio_heads": 4},
                   "model.llm.dtype": "float32"}
PREFIX = "llama_model.base_model.model."
TOL = 1e-5


def _golden(mode: str) -> dict[str, torch.Tensor]:
    data = (GOLDEN / FILES[mode]).read_bytes()
    return load(lzma.decompress(data) if FILES[mode].endswith(".xz") else data)


@pytest.fixture(scope="module")
def llm32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """vicuna-tiny's tokenizer (600 tokens) on a random Llama of width 32."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("llm32")
    config = json.loads((PANDA / "vicuna-tiny" / "config.json").read_text())
    config.update(hidden_size=32, intermediate_size=64, num_attention_heads=4)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.items() if k != "architectures"})).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(PANDA / "vicuna-tiny" / name, folder / name)
    return folder


def _delta(llm: Path, golden: dict[str, torch.Tensor], out: Path) -> dict[str, torch.Tensor]:
    """NExT-GPT's pytorch_model.pt for `llm`: llama_proj, peft-0.3 LoRA, the resized embed_tokens / lm_head
    [600 + 38, 32] (every row trained), the golden gen_text_hidden_fcs.0.* (image; no video/audio projectors)."""
    g = torch.Generator().manual_seed(18)
    base = load_file(str(llm / "model.safetensors"))
    embed = torch.cat([base["model.embed_tokens.weight"], 0.2 * torch.randn(38, 32, generator=g)])
    head = torch.cat([base["lm_head.weight"], 0.2 * torch.randn(38, 32, generator=g)])
    embed[:600] += 0.01 * torch.randn(600, 32, generator=g)  # NExT-GPT trains the whole resized matrix
    embed[602:606] = golden["inputs.input_embs"][0]  # [IMG0..3]: ids 602..605 (after <Img>, </Img>)
    state = {"llama_proj.weight": 0.1 * torch.randn(32, 32, generator=g), "llama_proj.bias": torch.zeros(32),
             f"{PREFIX}model.embed_tokens.weight": embed, f"{PREFIX}lm_head.weight": head}
    for layer in range(2):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            key = f"{PREFIX}model.layers.{layer}.self_attn.{proj}"
            state[f"{key}.lora_A.default.weight"] = 0.1 * torch.randn(4, 32, generator=g)
            state[f"{key}.lora_B.default.weight"] = 0.1 * torch.randn(32, 4, generator=g)
    state.update({k: v for k, v in golden.items() if k.startswith("gen_text_hidden_fcs.")})
    torch.save(state, out)
    return state


@pytest.fixture(scope="module", params=sorted(FILES))
def imported(request: pytest.FixtureRequest, llm32: Path, tmp_path_factory: pytest.TempPathFactory):
    mode = request.param
    golden = _golden(mode)
    tmp = tmp_path_factory.mktemp(f"nextgpt-{mode}")
    delta = _delta(llm32, golden, tmp / "pytorch_model.pt")
    run = run_import("nextgpt", tmp / "pytorch_model.pt", tmp / "run", llm32,
                     encoder=str(IB / "imagebind_small_weights.safetensors"), settings=SMALL_IMAGEBIND)
    return mode, golden, delta, run, SkillAssistant(run, device="cpu")


def test_checkpoint_holds_generation(imported) -> None:
    mode, golden, _, run, _ = imported
    ckpt = run / "checkpoint-0"
    cfg = load_resolved(ckpt / "config.yaml")
    gen = cfg.model.generation
    assert (gen.image_tokens, gen.video_tokens, gen.audio_tokens, gen.projector) == (4, 0, 0, mode)
    # linear: NExT-GPT's 77 image tokens (a Linear does not store it); transformer: the 4 learned queries
    assert list(gen.image_shape) == ([77, 16] if mode == "linear" else [4, 16]) and list(gen.llm_layers) == [-1]
    assert cfg.freeze.generation == "full" and cfg.freeze.llm == "lora"
    state = load_file(str(ckpt / "generation.safetensors"))
    assert state["rows.embed_delta"].shape == (4, 32) and state["rows.head_delta"].shape == (4, 32)
    names = {k[len("gen_text_hidden_fcs.0."):] for k in golden if k.startswith("gen_text_hidden_fcs.0.")}
    assert {k for k in state if not k.startswith("rows.")} == {f"projectors.image.0.{n}" for n in names}
    assert json.loads((ckpt / "import.json").read_text())["generation"] == ["image"]


def test_output_projector_reproduces_the_original(imported) -> None:
    mode, golden, _, _, assistant = imported
    gen = assistant.model.generation
    proj = gen.projectors["image"][0].eval()
    want = golden["outputs.reference"]
    with torch.no_grad():
        got = proj(golden["inputs.hidden"], golden["inputs.input_embs"])
        # the run's own input embeddings of [IMG0..3] (base-llm rows + deltas) are the golden input_embs[0]
        ids = torch.tensor([gen.signal_ids["image"]])
        own = proj(golden["inputs.hidden"][:1], assistant.model.llm.get_input_embeddings()(ids))
    assert got.shape == want.shape
    diff, diff_own = (got - want).abs().max().item(), (own - want[:1]).abs().max().item()
    print(f"{mode}: max |SkillGPT - original| {diff:.2e}, through the run's own signal rows {diff_own:.2e}")
    assert diff <= TOL and diff_own <= TOL
    assert want.abs().max() > 0.5  # the reference is not trivial


def test_signal_token_rows_are_the_stored_rows(imported) -> None:
    _, _, delta, _, assistant = imported
    llm, tok = assistant.model.llm, assistant.tokenizer
    names = [f"[IMG{i}]" for i in range(4)] + [f"[VID{i}]" for i in range(24)] + [f"[AUD{i}]" for i in range(8)]
    ids = torch.tensor(tok.convert_tokens_to_ids(names))
    assert ids.tolist() == list(range(602, 638))
    stored_embed, stored_head = delta[f"{PREFIX}model.embed_tokens.weight"], delta[f"{PREFIX}lm_head.weight"]
    h = torch.randn(3, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        rows = llm.get_input_embeddings()(ids)  # SignalRows' hook adds the image rows' deltas
        logits = llm.get_output_embeddings()(h)[:, ids]  # and the head deltas' logits
    embed_diff = (rows - stored_embed[ids]).abs().max().item()
    logit_diff = (logits - h @ stored_head[ids].T).abs().max().item()
    print(f"signal rows: max |embedding - stored| {embed_diff:.2e}, |logit - stored row's logit| {logit_diff:.2e}")
    assert embed_diff <= 1e-6 and logit_diff <= 1e-5
    # the base-llm rows of the image tokens are the base vocabulary's mean; the deltas carry the trained rows
    base = assistant.model.causal_lm.get_input_embeddings().weight
    torch.testing.assert_close(base[602], stored_embed[:600].mean(dim=0), rtol=0, atol=1e-6)
    torch.testing.assert_close(base[606:638], stored_embed[606:638], rtol=0, atol=0)  # video/audio: as stored


def test_settings_the_tensors_cannot_give_are_asked_for(tmp_path: Path) -> None:
    """Two projectors per modality need NExT-GPT's text_emb_to_*_layers; modalities must agree in count."""
    state = torch.load(FIX / "nextgpt" / "pytorch_model.pt", weights_only=True)
    for attr in ("gen_text_hidden_fcs", "gen_text_hidden_fcs_video", "gen_text_hidden_fcs_audio"):
        for name in ("weight", "bias"):
            state[f"{attr}.1.model.{name}"] = state[f"{attr}.0.model.{name}"]
    torch.save(state, tmp_path / "two.pt")
    with pytest.raises(ValueError, match=r"2 output projectors per modality.*--set model\.generation\.llm_layers"):
        run_import("nextgpt", tmp_path / "two.pt", tmp_path / "a", PANDA / "vicuna-tiny")
    del state["gen_text_hidden_fcs_audio.1.model.weight"], state["gen_text_hidden_fcs_audio.1.model.bias"]
    torch.save(state, tmp_path / "uneven.pt")
    with pytest.raises(ValueError, match="different numbers of output projectors"):
        run_import("nextgpt", tmp_path / "uneven.pt", tmp_path / "b", PANDA / "vicuna-tiny")
    assert not (tmp_path / "a" / "checkpoint-0").exists() and not (tmp_path / "b" / "checkpoint-0").exists()
