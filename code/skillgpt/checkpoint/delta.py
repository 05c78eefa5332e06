"""Delta checkpoints: only what a stage trained (projector, LoRA adapter or full LLM) plus its config.

Layout of one checkpoint folder:
    config.yaml             resolved config of the run that wrote it
    projector.safetensors   when freeze.projector == full
    generation.safetensors  when freeze.generation == full (signal-token rows + output projectors)
    adapter/                standard PEFT adapter folder (when freeze.llm == lora)
    llm/                    full Hugging Face model + tokenizer folder (when freeze.llm == full)
    trainer_state.json, rng_rank*.{safetensors,json}, optimizer.{safetensors,json}   resume state
                            (see skillgpt.checkpoint.resume and skillgpt.checkpoint.optimizer)
    COMPLETE                written last; folders without it are ignored
"""
from __future__ import annotations

from functools import reduce
from pathlib import Path

import torch
from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from skillgpt.config import Config, LoraConfig, config_diff, load_resolved, save_config
from skillgpt.models.llm import check_adapter_settings
from skillgpt.models.skill_model import SkillGPT

COMPLETE = "COMPLETE"
CHECKPOINT_PREFIX = "checkpoint-"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (by step)."""
    run = Path(run_dir)
    found = [p for p in run.glob(f"{CHECKPOINT_PREFIX}*") if (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (-> its newest complete checkpoint)."""
    p = Path(path)
    if (p / COMPLETE).is_file():
        return p
    found = list_checkpoints(p) if p.is_dir() else []
    if not found:
        raise FileNotFoundError(f"{p}: no complete checkpoint here (expected {CHECKPOINT_PREFIX}N/{COMPLETE})")
    return found[-1]


def save_trained_parts(model: SkillGPT, cfg: Config, tokenizer: PreTrainedTokenizerBase, out: Path,
                       weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write the parts the freeze policy trained, and the resolved config. `weights` ({parameter name:
    full tensor}, see skillgpt.checkpoint.optimizer.gather_trainable) replaces the module's own values,
    which ZeRO-3 leaves partitioned."""
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    weights = weights or {}

    def part(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        state = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        state.update({k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items() if k not in state})
        return state

    if cfg.freeze.projector == "full":
        save_file(part("projector.", model.projector), str(out / "projector.safetensors"))
    if cfg.freeze.generation == "full":  # signal-token rows + output projectors
        save_file(part("generation.", model.generation), str(out / "generation.safetensors"))
    if cfg.freeze.llm == "lora":
        model.llm.peft_config["default"].base_model_name_or_path = str(model.base_llm_path)
        adapter = {k[len("llm."):]: v.contiguous() for k, v in weights.items() if k.startswith("llm.")}
        model.llm.save_pretrained(str(out / "adapter"), state_dict=adapter or None)
    elif cfg.freeze.llm == "full":
        model.causal_lm.save_pretrained(str(out / "llm"), state_dict=part("llm.", model.causal_lm) if weights else None)
        tokenizer.save_pretrained(str(out / "llm"))


def _load_full_llm(model: SkillGPT, folder: Path) -> None:
    state: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    target = model.causal_lm
    missing, unexpected = target.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(target.config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise ValueError(f"{folder}: LLM weights do not match the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.base_llm_path = str(folder)


def _load_adapter(model: SkillGPT, folder: Path, ckpt_cfg: Config) -> None:
    check_adapter_settings(folder, ckpt_cfg.model.llm.lora, str(folder.parent / "config.yaml"))
    weights = load_file(str(folder / "adapter_model.safetensors"))
    if isinstance(model.llm, PeftModel):
        built = model.llm.peft_config["default"]
        built_lora = LoraConfig(r=built.r, alpha=built.lora_alpha, dropout=built.lora_dropout,
                                target_modules=sorted(built.target_modules))
        check_adapter_settings(folder, built_lora, "the model being built")
        result = set_peft_model_state_dict(model.llm, weights)
        if result.unexpected_keys:
            raise ValueError(f"{folder}: adapter keys not in the model: {result.unexpected_keys[:5]}")
    else:  # an earlier stage's LoRA: merge it into the base weights
        model.llm = PeftModel.from_pretrained(model.llm, str(folder)).merge_and_unload()


# Settings that decide the shapes of the trained parts or the token layout they were trained on (clips,
# frames, crops: num_crops: 3 triples clip_tokens): a checkpoint built with others is refused.
ARCHITECTURE_KEYS = ("model.encoder.", "model.projector.", "model.context.", "model.audio.", "model.generation.",
                     "data.views",
                     "data.view_mode", "data.video.num_clips", "data.video.frames_per_clip", "data.video.num_crops",
                     "data.audio.num_clips")


def check_architecture(ckpt_cfg: Config, cfg: Config, ckpt: Path) -> None:
    """Raise naming every architecture setting in which `ckpt` differs from the model being built."""
    differ = [k for k in config_diff(ckpt_cfg, cfg) if k.startswith(ARCHITECTURE_KEYS)]
    if differ:
        flat = lambda c, k: reduce(getattr, k.split("."), c)  # noqa: E731
        shown = ", ".join(f"{k} ({flat(ckpt_cfg, k)!r} in the checkpoint, {flat(cfg, k)!r} here)" for k in differ[:6])
        raise ValueError(f"{ckpt}: built for another architecture: {shown}")


def load_trained_parts(model: SkillGPT, ckpt: Path, cfg: Config | None = None) -> Config:
    """Load what `ckpt` trained into `model` (built from a compatible config; with `cfg`, architecture
    settings are compared first). Returns ckpt's config."""
    ckpt_cfg = load_resolved(ckpt / "config.yaml")
    if cfg is not None:
        check_architecture(ckpt_cfg, cfg, ckpt)
    if (ckpt / "llm").is_dir():
        _load_full_llm(model, ckpt / "llm")
    if (ckpt / "projector.safetensors").is_file():
        state = load_file(str(ckpt / "projector.safetensors"))
        try:
            model.projector.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{ckpt / 'projector.safetensors'}: does not fit model.projector: {err}") from err
    if (ckpt / "generation.safetensors").is_file():
        if model.generation is None:
            raise ValueError(f"{ckpt / 'generation.safetensors'}: the model has no signal tokens (model.generation)")
        try:
            model.generation.load_state_dict(load_file(str(ckpt / "generation.safetensors")), strict=True)
        except RuntimeError as err:
            raise ValueError(f"{ckpt / 'generation.safetensors'}: does not fit model.generation: {err}") from err
    if (ckpt / "adapter").is_dir():
        _load_adapter(model, ckpt / "adapter", ckpt_cfg)
    return ckpt_cfg
