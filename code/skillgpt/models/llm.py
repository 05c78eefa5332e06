"""Causal LLM + tokenizer from a local folder, and LoRA on top of it."""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model, prepare_model_for_kbit_training
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from skillgpt.config.schema import LLMConfig, LoraConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_llm_folder(path: str | Path, key: str = "model.llm.path") -> Path:
    """Fail early, naming the config key, when the local model folder is not usable."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{key}: {folder} has no config.json. Put a Hugging Face causal LM folder there "
            "(config.json, *.safetensors, tokenizer files); see README \"Train on your own videos\", step 2."
        )
    return folder


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved beside the LLM; give it a pad token if it has none."""
    tokenizer = AutoTokenizer.from_pretrained(check_llm_folder(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


BITSANDBYTES = "bitsandbytes==0.50.2"


def _gpu_available() -> bool:
    """Whether 8/4-bit loading is allowed here (tests replace this to run bitsandbytes' CPU kernels)."""
    return torch.cuda.is_available()


def _quantized_device() -> int | str:
    """Where a quantized LLM is placed: this process's GPU (LOCAL_RANK); the CPU only in tests, which
    lift the GPU requirement to exercise the QLoRA path with bitsandbytes' CPU kernels."""
    return int(os.environ.get("LOCAL_RANK", 0)) if torch.cuda.is_available() else "cpu"


def quantization_config(cfg: LLMConfig):
    """bitsandbytes settings for `model.llm.quantization` (None when unset); refused without a CUDA GPU."""
    if cfg.quantization is None:
        return None
    if cfg.quantization not in ("8bit", "4bit"):
        raise ValueError(f"model.llm.quantization: expected null, 8bit or 4bit, got {cfg.quantization!r}")
    if not _gpu_available():
        raise ValueError(
            f"model.llm.quantization={cfg.quantization}: loading the LLM in {cfg.quantization} needs a CUDA GPU "
            "(bitsandbytes' kernels); this machine has none. Set model.llm.quantization=null to load it in "
            f"model.llm.dtype ({cfg.dtype}), or run on a GPU machine")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ImportError(f"model.llm.quantization={cfg.quantization} needs bitsandbytes: pip install {BITSANDBYTES}") from err
    from transformers import BitsAndBytesConfig

    if cfg.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = DTYPES[cfg.dtype] if cfg.dtype != "float32" else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def attention_implementation(cfg: LLMConfig) -> str:
    """`auto`: FlashAttention 2 where it can run (a CUDA GPU, the flash-attn package, bf16/fp16 weights),
    PyTorch's SDPA elsewhere; any other value is passed to transformers as given."""
    if cfg.attn_implementation != "auto":
        return cfg.attn_implementation
    half = cfg.dtype in ("bfloat16", "float16") or cfg.quantization is not None
    if half and torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def load_llm(cfg: LLMConfig, on_meta: bool = False) -> PreTrainedModel:
    """Load `AutoModelForCausalLM` from `cfg.path`; on_meta builds the architecture without weights.
    With `cfg.quantization` the base weights load in 8 or 4 bit onto this process's GPU (LOCAL_RANK)."""
    folder = check_llm_folder(cfg.path)
    if on_meta:
        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.dtype])
    quantization = quantization_config(cfg)
    extra = {}
    if quantization is not None:
        extra = {"quantization_config": quantization, "device_map": {"": _quantized_device()}}
    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=DTYPES[cfg.dtype], attn_implementation=attention_implementation(cfg), **extra
    )


def is_quantized(llm: PreTrainedModel) -> bool:
    return getattr(llm, "hf_quantizer", None) is not None


def add_lora(llm: PreTrainedModel, cfg: LoraConfig) -> PreTrainedModel:
    """Wrap the LLM with fresh LoRA adapters on `cfg.target_modules` (QLoRA-style on a quantized LLM:
    norms in fp32, input gradients enabled, as peft prepares k-bit models)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in llm.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise ValueError(f"model.llm.lora.target_modules: {missing} not found in the LLM's modules")
    if is_quantized(llm):
        llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=False)
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, peft_cfg)


# adapter_config.json field -> model.llm.lora field
ADAPTER_FIELDS = {"r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "target_modules"}


def adapter_settings(folder: str | Path) -> dict[str, Any]:
    """The LoRA settings an adapter folder was saved with (its adapter_config.json), as model.llm.lora fields."""
    path = Path(folder) / "adapter_config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable adapter config ({err})") from err
    missing = [k for k in ADAPTER_FIELDS if k not in saved]
    if missing:
        raise ValueError(f"{path}: missing {missing} (not a LoRA adapter saved by peft)")
    out = {field: saved[key] for key, field in ADAPTER_FIELDS.items()}
    targets = out["target_modules"]
    out["target_modules"] = sorted([targets] if isinstance(targets, str) else targets)
    return out


def check_adapter_settings(folder: str | Path, lora: LoraConfig, source: str) -> None:
    """Raise naming both values for every LoRA setting in which the adapter's adapter_config.json and
    `lora` (model.llm.lora of `source`) disagree: the adapter's own file decides how it was trained."""
    saved = adapter_settings(folder)
    ours = {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": sorted(lora.target_modules)}
    differ = [f"{key} {saved[field]!r} in adapter_config.json, model.llm.lora.{field} {ours[field]!r} in {source}"
              for key, field in ADAPTER_FIELDS.items()
              if (saved[field] != ours[field] if field == "target_modules" else float(saved[field]) != float(ours[field]))]
    if differ:
        raise ValueError(f"{Path(folder) / 'adapter_config.json'}: the adapter's LoRA settings disagree with the "
                         f"config: {'; '.join(differ)}. Set model.llm.lora to the adapter's values")

