"""Causal LLM + tokenizer from a local folder, and LoRA on top of it."""
from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from skillgpt.config.schema import LLMConfig, LoraConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_llm_folder(path: str | Path, key: str = "model.llm.path") -> Path:
    """Fail early, naming the config key, when the local model folder is not usable."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{key}: {folder} has no config.json. Put a Hugging Face causal LM folder there "
            "(config.json, *.safetensors, tokenizer files); see README 'Weights'."
        )
    return folder


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved beside the LLM; give it a pad token if it has none."""
    tokenizer = AutoTokenizer.from_pretrained(check_llm_folder(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_llm(cfg: LLMConfig, on_meta: bool = False) -> PreTrainedModel:
    """Load `AutoModelForCausalLM` from `cfg.path`; on_meta builds the architecture without weights."""
    folder = check_llm_folder(cfg.path)
    if on_meta:
        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=DTYPES[cfg.dtype])
    return AutoModelForCausalLM.from_pretrained(
        folder, dtype=DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation
    )


def add_lora(llm: PreTrainedModel, cfg: LoraConfig) -> PreTrainedModel:
    """Wrap the LLM with fresh LoRA adapters on `cfg.target_modules`."""
    names = {name.rsplit(".", 1)[-1] for name, _ in llm.named_modules()}
    missing = [m for m in cfg.target_modules if m not in names]
    if missing:
        raise ValueError(f"model.llm.lora.target_modules: {missing} not found in the LLM's modules")
    peft_cfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(llm, peft_cfg)
