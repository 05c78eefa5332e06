"""Low-resource mode (8/4-bit base LLM): refused with a clear message where it cannot run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillgpt.config.schema import LLMConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_llm_is_refused_without_a_gpu(bits, tiny_workspace, monkeypatch):
    import skillgpt.models.llm as llm

    cfg = LLMConfig(path=str(tiny_workspace.llm), quantization=bits)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            llm.load_llm(cfg)
    monkeypatch.setattr(llm, "_gpu_available", lambda: False)
    with pytest.raises(ValueError, match=f"model.llm.quantization={bits}: .*needs a CUDA GPU"):
        llm.quantization_config(cfg)


def test_unknown_quantization_and_unset_quantization(monkeypatch):
    import skillgpt.models.llm as llm

    monkeypatch.setattr(llm, "_gpu_available", lambda: True)
    with pytest.raises(ValueError, match="expected null, 8bit or 4bit, got '3bit'"):
        llm.quantization_config(LLMConfig(path="x", quantization="3bit"))
    monkeypatch.setattr(llm, "_gpu_available", lambda: False)
    assert llm.quantization_config(LLMConfig(path="x")) is None


def test_4bit_settings_on_a_gpu_machine(monkeypatch):
    """What a GPU run would load with: NF4, double quantisation, bf16 compute (needs bitsandbytes)."""
    pytest.importorskip("bitsandbytes")
    import skillgpt.models.llm as llm

    monkeypatch.setattr(llm, "_gpu_available", lambda: True)
    q = llm.quantization_config(LLMConfig(path="x", quantization="4bit", dtype="bfloat16"))
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert str(q.bnb_4bit_compute_dtype) == "torch.bfloat16"


def test_zero3_with_a_quantized_llm_is_refused(tiny_workspace):
    from skillgpt.train.ds_config import make_deepspeed_config

    cfg = tiny_workspace.config(2, "q", f"train.deepspeed_config={REPO}/dsconfig/zero3.json",
                                "model.llm.quantization=4bit")
    with pytest.raises(ValueError, match="ZeRO-3 cannot partition an 8/4-bit LLM"):
        make_deepspeed_config(cfg, 1)


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_qlora_trains_saves_and_scores_when_the_gpu_check_is_lifted(bits, tiny_workspace, tmp_path, monkeypatch):
    """The GPU path on bitsandbytes' CPU kernels: quantized base, LoRA on top, DeepSpeed ZeRO-2 steps, an
    adapter checkpoint that an assistant (quantized the same way) loads and scores with."""
    import torch

    import skillgpt.models.llm as llm
    from skillgpt.inference.assistant import SkillAssistant
    from skillgpt.models.build import build_model
    from skillgpt.train.loop import train

    monkeypatch.setattr(llm, "_gpu_available", lambda: True)
    cfg = tiny_workspace.config(2, f"q{bits}", "train.init_from=null", f"train.output_dir={tmp_path / 'run'}",
                                "train.micro_batch_size=2", "train.max_steps=2", f"model.llm.quantization={bits}")
    model, _ = build_model(cfg)
    kinds = {type(m).__name__ for m in model.causal_lm.modules()}
    assert {"8bit": "Linear8bitLt", "4bit": "Linear4bit"}[bits] in kinds
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or n.startswith("projector.") for n in trainable)
    ckpt = train(cfg)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    assistant = SkillAssistant(ckpt, device="cpu")
    sample = json.loads((tiny_workspace.data / "skill_val.json").read_text())[0]
    scores = assistant.label_scores([assistant.load(sample, tiny_workspace.data)], "How skilled?", ["Novice", "Late Expert"])
    assert torch.isfinite(scores).all()
