"""Computed (not measured) per-GPU memory for stage-2 LoRA training at the real presets' shapes, for each
ZeRO stage / offload / 8-bit / 4-bit setting. The model is built on the meta device from the preset
(official Qwen2.5-1.5B and Vicuna-7B dimensions), so parameter counts are exact; bytes per parameter
follow what each setting keeps on the GPU. Activations are left out (they depend on batch and length;
see the train-step benchmark).

    python bench/memory_estimate.py [--gpus 1 2 8]
"""
from __future__ import annotations

import argparse
import datetime
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3

# Official dimensions (the models' config.json), written into a weightless folder for the meta build.
LLM_CONFIGS = {
    "qwen2.5-1.5b": {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 1536,
                     "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
                     "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True,
                     "max_position_embeddings": 32768, "rms_norm_eps": 1e-6},
    "vicuna-7b-v0": {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 4096,
                     "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                     "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": False,
                     "max_position_embeddings": 2048, "rms_norm_eps": 1e-6},
}

# (name, ZeRO stage, optimizer offloaded, parameters offloaded, LLM bits)
SETTINGS = [
    ("ZeRO-2", 2, False, False, 16),
    ("ZeRO-2 + optimizer offload", 2, True, False, 16),
    ("ZeRO-3", 3, False, False, 16),
    ("ZeRO-3 + optimizer and parameter offload", 3, True, True, 16),
    ("ZeRO-2, LLM in 8 bit", 2, False, False, 8),
    ("ZeRO-2, LLM in 4 bit (NF4)", 2, False, False, 4),
]


def meta_model(preset: str):
    """The stage-2 model of `preset` built on the meta device (exact shapes, no weights)."""
    from skillgpt.config import load_config
    from skillgpt.models.build import build_model

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(LLM_CONFIGS[preset]))
        cfg = load_config(REPO / "config" / "stage_2.yaml", [f"preset={preset}", f"model.llm.path={tmp}",
                                                             "train.init_from=null"])
        return build_model(cfg, on_meta=True)[0]


def count(preset: str) -> dict[str, int]:
    """Parameter counts of the stage-2 model built on the meta device."""
    model = meta_model(preset)
    llm = model.causal_lm
    emb = llm.get_input_embeddings().weight.numel()
    head = 0 if LLM_CONFIGS[preset]["tie_word_embeddings"] else llm.get_output_embeddings().weight.numel()
    frozen_llm = sum(p.numel() for p in llm.parameters() if not p.requires_grad)
    return {
        "encoder": sum(p.numel() for p in model.encoder.parameters()),
        "llm_frozen": frozen_llm,
        "llm_not_quantized": emb + head + sum(p.numel() for n, p in llm.named_parameters() if "norm" in n),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def per_gpu_bytes(c: dict[str, int], stage: int, opt_off: bool, param_off: bool, bits: int, gpus: int) -> float:
    """Weights, gradients and optimizer state held on one GPU (bf16 weights, fp32 master + Adam)."""
    shard = gpus if stage == 3 else 1
    quantized = c["llm_frozen"] - c["llm_not_quantized"]
    if bits == 16:
        llm = 2 * c["llm_frozen"]
    else:  # bitsandbytes quantizes the Linear layers; embeddings, LM head and norms stay bf16
        per = 1.0 if bits == 8 else 0.5 + 0.127 / 8  # NF4 + double-quantised absmax (~0.127 bit/param)
        llm = per * quantized + 2 * c["llm_not_quantized"]
    frozen = (0 if param_off else (llm + 2 * c["encoder"]) / shard)
    t = c["trainable"]
    weights = 0 if param_off else 2 * t / shard
    grads = 2 * t / (gpus if stage >= 2 else 1)
    optimizer = 0 if opt_off else 12 * t / gpus  # fp32 master + Adam's two moments, partitioned by ZeRO-1+
    return frozen + weights + grads + optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 8])
    args = ap.parse_args()
    lines = [f"## Memory estimate ({datetime.date.today()}, computed from parameter counts, not measured)", "",
             "Command: `python bench/memory_estimate.py`. Per GPU: frozen weights (bf16, or 8/4-bit) + trainable "
             "weights, gradients and Adam state (fp32 master + 2 moments); activations not included. ZeRO-3 also "
             "needs room for the layers it gathers at a time (stage3_prefetch_bucket_size: 5e7 parameters, "
             "~0.1 GiB in dsconfig/zero3*.json); offloaded state moves to host RAM.", ""]
    for preset in LLM_CONFIGS:
        c = count(preset)
        lines += [f"### {preset} + ImageBind-huge (encoder {c['encoder'] / 1e6:.0f} M, LLM {c['llm_frozen'] / 1e9:.2f} B "
                  f"frozen, {c['trainable'] / 1e6:.1f} M trainable: projector + LoRA)", "",
                  "| setting | " + " | ".join(f"{g} GPU{'s' if g > 1 else ''}" for g in args.gpus) + " |",
                  "|---|" + "---:|" * len(args.gpus)]
        for name, stage, opt_off, param_off, bits in SETTINGS:
            cells = [f"{per_gpu_bytes(c, stage, opt_off, param_off, bits, g) / GIB:.2f} GiB" for g in args.gpus]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    with open(REPO / "bench" / "RESULTS.md", "a", encoding="utf-8") as f:
        f.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
