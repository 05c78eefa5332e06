"""Low-resource mode (8/4-bit base LLM): refused with a clear message where it cannot run."""
from __future__ import annotations

from pathlib import Path

import pytest

from skillgpt.config.schema import LLMConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("bits", ["8bit", "4bit"])
def test_quantized_llm_is_refused_without_a_gpu(bits, tiny_workspace):
    from skillgpt.models.llm import load_llm, quantization_config

    cfg = LLMConfig(path=str(tiny_workspace.llm), quantization=bits)
    with pytest.raises(ValueError, match=f"model.llm.quantization={bits}: .*needs a CUDA GPU"):
        quantization_config(cfg, cuda=False)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="needs a CUDA GPU"):
            load_llm(cfg)


def test_unknown_quantization_and_unset_quantization():
    from skillgpt.models.llm import quantization_config

    with pytest.raises(ValueError, match="expected null, 8bit or 4bit, got '3bit'"):
        quantization_config(LLMConfig(path="x", quantization="3bit"), cuda=True)
    assert quantization_config(LLMConfig(path="x"), cuda=False) is None


def test_4bit_settings_on_a_gpu_machine(monkeypatch):
    """What a GPU run would load with: NF4, double quantisation, bf16 compute (needs bitsandbytes)."""
    pytest.importorskip("bitsandbytes")
    from skillgpt.models.llm import quantization_config

    q = quantization_config(LLMConfig(path="x", quantization="4bit", dtype="bfloat16"), cuda=True)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert str(q.bnb_4bit_compute_dtype) == "torch.bfloat16"


def test_zero3_with_a_quantized_llm_is_refused(tiny_workspace):
    from skillgpt.train.ds_config import make_deepspeed_config

    cfg = tiny_workspace.config(2, "q", f"train.deepspeed_config={REPO}/dsconfig/zero3.json",
                                "model.llm.quantization=4bit")
    with pytest.raises(ValueError, match="ZeRO-3 cannot partition an 8/4-bit LLM"):
        make_deepspeed_config(cfg, 1)
