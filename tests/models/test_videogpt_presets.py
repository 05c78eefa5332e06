"""The VideoGPT+ seed presets (Qwen2.5-1.5B / 3B, pooling levels 1, 2, 4) assemble on the meta device with the
real parameter counts of InternVideo2-1B, CLIP ViT-L/14-336 and the LLMs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillgpt.config import load_config
from skillgpt.models.build import build_model

REPO = Path(__file__).resolve().parents[2]
QWEN = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "num_key_value_heads": 2, "vocab_size": 151936,
        "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True}
LLMS = {  # config.json sizes of the official checkpoints and their published parameter counts
    "videogpt-plus-qwen2.5-1.5b": (QWEN | {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                                           "num_attention_heads": 12}, 1_543_714_304),
    "videogpt-plus-qwen2.5-3b": (QWEN | {"hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                                         "num_attention_heads": 16}, 3_085_938_688),
}
CLIP_L_336 = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
              "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
              "projection_dim": 768, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
CLIP_PROCESSOR = {"image_processor_type": "CLIPImageProcessor", "size": {"shortest_edge": 336},
                  "crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "resample": 3,
                  "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
# InternVideo2-1B, the 39 blocks VideoGPT+ runs (qkv, proj, fc1/fc2 with biases, six 1408 vectors) + stem,
# class token, video (1 + 4*256) and image (1 + 256) position tables; CLIP ViT-L/14-336's vision tower.
IV2_BLOCK = 1408 * 4224 + 1408 * 1408 + 1408 + 2 * 1408 * 6144 + 6144 + 1408 + 6 * 1408
INTERNVIDEO2_PARAMS = 39 * IV2_BLOCK + 3 * 14 * 14 * 1408 + 1408 + 1408 + (1025 + 257) * 1408
CLIP_L_336_PARAMS = 303_507_456


@pytest.mark.parametrize("preset,pool", [("videogpt-plus-qwen2.5-1.5b", 1), ("videogpt-plus-qwen2.5-1.5b", 2),
                                         ("videogpt-plus-qwen2.5-1.5b", 4), ("videogpt-plus-qwen2.5-3b", 2)])
def test_videogpt_plus_preset_on_meta(preset: str, pool: int, tmp_path: Path) -> None:
    llm, clip = tmp_path / "llm", tmp_path / "clip"
    for folder, files in ((llm, {"config.json": LLMS[preset][0]}),
                          (clip, {"config.json": CLIP_L_336, "preprocessor_config.json": CLIP_PROCESSOR})):
        folder.mkdir()
        for name, content in files.items():
            (folder / name).write_text(json.dumps(content))
    cfg = load_config(REPO / "config" / "stage_2.yaml", [
        f"preset={preset}", f"model.llm.path={llm}", f"model.context.encoder.path={clip}",
        f"model.projector.pool={pool}", f"model.context.projector.pool={pool}"])
    assert cfg.data.video.processor == "internvideo2" and cfg.data.video.sampling == "videogpt_plus"
    model, _ = build_model(cfg, on_meta=True)

    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(model.encoder["video"]) == INTERNVIDEO2_PARAMS
    assert count(model.encoder["context"].model) == CLIP_L_336_PARAMS
    base = [p for n, p in model.causal_lm.named_parameters() if "lora_" not in n]
    assert sum(p.numel() for p in base) == LLMS[preset][1]

    hidden = LLMS[preset][0]["hidden_size"]
    video_w, context_w = (model.projector[name].mlp[0].weight for name in ("video", "context"))
    assert tuple(video_w.shape) == (hidden, 1408) and tuple(context_w.shape) == (hidden, 1024)
    per_frame = {1: 256, 2: 64, 4: 16}[pool]  # round(16 / pool)^2
    per_context = {1: 576, 2: 144, 4: 36}[pool]  # round(24 / pool)^2
    assert model.num_visual_tokens() == 16 * per_frame + 16 * per_context
