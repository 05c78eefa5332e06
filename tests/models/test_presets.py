"""Every real preset assembles, on the meta device, with the names and shapes its checkpoints need."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillgpt.config import load_config
from skillgpt.models.build import build_model

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

# config.json values of the official checkpoints (the parts that fix parameter shapes).
LLM_CONFIGS = {
    "qwen2.5-1.5b": {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
        "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
        "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True,
    },
    "vicuna-7b-v0": {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
        "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    },
}
# Published parameter counts of the base LLMs.
LLM_PARAMS = {"qwen2.5-1.5b": 1_543_714_304, "vicuna-7b-v0": 6_738_415_616}
LLM_SHAPES = {
    "qwen2.5-1.5b": {
        "model.embed_tokens.weight": (151936, 1536),
        "model.layers.27.self_attn.k_proj.weight": (256, 1536),
        "model.layers.27.self_attn.k_proj.bias": (256,),
        "model.layers.0.mlp.down_proj.weight": (1536, 8960),
    },
    "vicuna-7b-v0": {
        "model.embed_tokens.weight": (32000, 4096),
        "lm_head.weight": (32000, 4096),
        "model.layers.31.self_attn.q_proj.weight": (4096, 4096),
        "model.layers.0.mlp.gate_proj.weight": (11008, 4096),
    },
}


@pytest.mark.parametrize("preset", sorted(LLM_CONFIGS))
@pytest.mark.parametrize("stage", [1, 2])
def test_real_preset_assembles_on_meta(preset: str, stage: int, tmp_path: Path) -> None:
    llm_dir = tmp_path / preset
    llm_dir.mkdir()
    (llm_dir / "config.json").write_text(json.dumps(LLM_CONFIGS[preset]))
    cfg = load_config(REPO / "config" / f"stage_{stage}.yaml", [f"preset={preset}", f"model.llm.path={llm_dir}"])
    model, _ = build_model(cfg, on_meta=True)

    huge = json.loads((FIXTURES / "imagebind" / "imagebind_huge_vision_audio_shapes.json").read_text())
    huge = huge.get("parameters", huge) if isinstance(huge, dict) else huge
    vision = {k: tuple(v) for k, v in huge.items() if "vision" in k}
    enc = {k: tuple(v.shape) for k, v in model.encoder["video"].model.state_dict().items()}
    assert enc == vision

    base = {n: p for n, p in model.causal_lm.named_parameters() if "lora_" not in n}
    names = {n.replace("base_model.model.", "").replace(".base_layer", ""): tuple(p.shape) for n, p in base.items()}
    for name, shape in LLM_SHAPES[preset].items():
        assert names[name] == shape, name
    assert sum(p.numel() for p in base.values()) == LLM_PARAMS[preset]

    hidden = LLM_CONFIGS[preset]["hidden_size"]
    weights = [p for n, p in model.projector.named_parameters() if n.endswith("weight")]
    assert weights[0].shape[1] == 1280 and weights[-1].shape[0] == hidden
    assert model.num_visual_tokens() == 5 * (1 + 4 * 4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("projector.") for n in trainable)
    assert all(n.startswith("projector.") or ("lora_" in n and stage == 2) for n in trainable)


def test_nextgpt_preset_on_meta(tmp_path: Path) -> None:
    """nextgpt-vicuna-7b (the NExT-GPT recipe's real model) in each of the recipe's stages: Vicuna-7B, ImageBind-huge,
    signal tokens 4/24/8 and output projectors giving SD 1.5's [77, 768], ZeroScope's [77, 1024] and AudioLDM's
    [1, 512]. The signal tokens need the real tokenizer (not on meta): the projectors are built and run on meta from
    the preset's settings."""
    import torch

    from skillgpt.models.build import output_projector_configs
    from skillgpt.models.output_projectors import build_output_projector
    from skillgpt.models.signal_tokens import NEXTGPT_COUNTS

    llm_dir = tmp_path / "vicuna"
    llm_dir.mkdir()
    (llm_dir / "config.json").write_text(json.dumps(LLM_CONFIGS["vicuna-7b-v0"]))
    args = ["preset=nextgpt-vicuna-7b", f"model.llm.path={llm_dir}"]
    cfgs = {s: load_config(REPO / "config" / "nextgpt" / f"stage_{s}.yaml", args) for s in (1, 2, 3)}
    assert all(c.model.generation.counts() == NEXTGPT_COUNTS for c in cfgs.values())
    assert [(c.freeze.projector, c.freeze.llm, c.freeze.generation) for c in cfgs.values()] == [
        ("full", "frozen", "frozen"), ("frozen", "frozen", "full"), ("full", "lora", "full")]
    gen = cfgs[3].model.generation
    shapes = {"image": (77, 768), "video": (77, 1024), "audio": (1, 512)}
    for modality, pcfg in output_projector_configs(gen, in_dim=4096).items():
        with torch.device("meta"):
            proj = build_output_projector(pcfg)
            k = NEXTGPT_COUNTS[modality]
            out = proj(torch.empty(2, k, 4096), torch.empty(2, k, 4096))
        assert tuple(out.shape) == (2, *shapes[modality]), modality
        assert (pcfg.hidden_dim, pcfg.num_heads, pcfg.num_encoder_layers, pcfg.num_decoder_layers) == (512, 4, 4, 4)
    # the rest is vicuna-7b-v0's model (assembled on meta by test_real_preset_assembles_on_meta)
    vicuna = load_config(REPO / "config" / "stage_2.yaml", ["preset=vicuna-7b-v0", f"model.llm.path={llm_dir}"])
    assert (cfgs[3].model.encoder, cfgs[3].model.projector, cfgs[3].model.llm) == \
        (vicuna.model.encoder, vicuna.model.projector, vicuna.model.llm)
