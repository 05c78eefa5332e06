"""`skillgpt export RUN --out DIR`: take a checkpoint out to plain transformers.

- ``--format merged``: DIR is a Hugging Face causal-LM folder (LoRA merged into the base weights, the
  tokenizer beside it) that ``AutoModelForCausalLM.from_pretrained(DIR)`` loads, plus
  ``skillgpt_projector.safetensors`` (every projector branch, keys ``<branch>.<param>``) and
  ``skillgpt_config.yaml`` (the run's config: encoder, projector and template settings).
- ``--format llava``: for LLaVA-shaped models (one ``hf_image`` CLIP/SigLIP encoder without pooling, a
  ``linear`` or ``mlp2x_gelu`` projector, one frame per image), DIR is a ``LlavaForConditionalGeneration``
  folder with its ``LlavaProcessor`` (image processor of the encoder folder, the tokenizer with an added
  ``<image>`` token), which transformers, vLLM and SGLang load without SkillGPT. A ``linear`` projector
  becomes LLaVA-HF's two-layer projector with an identity activation and an identity second layer.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from skillgpt.config import Config, save_config

if TYPE_CHECKING:  # torch, peft and transformers load inside the functions: `skillgpt --help` stays light
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FORMATS = ("merged", "llava")
IMAGE_TOKEN = "<image>"
ENCODER_CLASSES = {"CLIPVisionModel", "SiglipVisionModel"}  # vision towers LlavaForConditionalGeneration builds


def load_run(run: str | Path, overrides: Sequence[str] = ()) -> tuple[Config, Any, PreTrainedTokenizerBase]:
    """The checkpoint's config, its model (every trained part loaded, on the CPU) and tokenizer."""
    from skillgpt.checkpoint.delta import load_trained_parts, resolve_checkpoint
    from skillgpt.checkpoint.lineage import checkpoint_config
    from skillgpt.models.build import build_model

    ckpt = resolve_checkpoint(run)
    cfg = checkpoint_config(ckpt, list(overrides))
    model, tokenizer = build_model(cfg)
    load_trained_parts(model, ckpt)
    return cfg, model.eval(), tokenizer


def merged_llm(model: Any) -> PreTrainedModel:
    """The model's causal LM with any LoRA adapter merged into its weights (the model is changed)."""
    from peft import PeftModel

    if isinstance(model.llm, PeftModel):
        model.llm = model.llm.merge_and_unload()
    return model.causal_lm


def _new_folder(out: Path) -> Path:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--out {out}: not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_merged(cfg: Config, model: Any, tokenizer: PreTrainedTokenizerBase, out: Path) -> Path:
    """Write the merged LLM folder plus the projector weights and the run config (see the module doc)."""
    from safetensors.torch import save_file

    _new_folder(out)
    llm = merged_llm(model)
    llm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.projector.state_dict().items()},
              str(out / "skillgpt_projector.safetensors"))
    save_config(cfg, out / "skillgpt_config.yaml")
    return out


def _llava_shape(cfg: Config, model: Any) -> Any:
    """The image encoder when `cfg` is LLaVA-shaped; else a ValueError naming every setting that is not."""
    m, problems = cfg.model, []
    if m.encoder.name != "hf_image":
        problems.append(f"model.encoder.name is {m.encoder.name!r} (needs hf_image: CLIP or SigLIP)")
    if m.encoder.pool != 1:
        problems.append(f"model.encoder.pool is {m.encoder.pool} (needs 1: LLaVA-HF does not pool patches)")
    if m.projector.name not in ("linear", "mlp2x_gelu"):
        problems.append(f"model.projector.name is {m.projector.name!r} (needs linear or mlp2x_gelu)")
    if m.context.enabled or m.audio.enabled:
        problems.append("model.context/model.audio are enabled (LLaVA-HF has one image encoder)")
    if problems:
        raise ValueError("--format llava: not a LLaVA-shaped model: " + "; ".join(problems))
    encoder = model.encoder["video"]
    if type(encoder.model).__name__ not in ENCODER_CLASSES:
        raise ValueError(f"--format llava: the encoder is a {type(encoder.model).__name__}; LLaVA-HF builds "
                         f"{sorted(ENCODER_CLASSES)}")
    groups = model.layouts["image"]["video"].groups
    if groups != 1:
        raise ValueError(f"--format llava: an image gives {groups} frame groups here; LLaVA-HF encodes one "
                         "(set data.video.frames_per_clip=1)")
    return encoder


def _projector_state(cfg: Config, projector: torch.nn.Module, width: int) -> dict[str, torch.Tensor]:
    """SkillGPT's projector as LLaVA-HF's linear_1 -> act -> linear_2."""
    import torch

    p = {k: v.detach().float() for k, v in projector.state_dict().items()}
    if cfg.model.projector.name == "mlp2x_gelu":
        return {"linear_1.weight": p["0.weight"], "linear_1.bias": p["0.bias"],
                "linear_2.weight": p["2.weight"], "linear_2.bias": p["2.bias"]}
    return {"linear_1.weight": p["weight"], "linear_1.bias": p["bias"],  # act "linear" is the identity
            "linear_2.weight": torch.eye(width), "linear_2.bias": torch.zeros(width)}


def _with_image_row(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """`weight` grown to `rows` rows, new rows the mean row (as LLaVA-HF initialised its added tokens)."""
    import torch

    extra = rows - weight.shape[0]
    if extra <= 0:
        return weight
    return torch.cat([weight, weight.float().mean(0, keepdim=True).to(weight.dtype).expand(extra, -1)])


def chat_template(cfg: Config, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """A jinja chat template that renders what the run's SkillGPT template renders (for vLLM/SGLang chat
    APIs): system, then per user turn its images as ``<image>\\n`` and its text, per reply the reply and
    its terminator. Separator templates only (vicuna_v0/v1 ...); None for others, and whenever a probe
    conversation renders differently from SkillGPT's own renderer."""
    import json

    from skillgpt.data.templates import SeparatorTemplate, get_template, render

    tpl = get_template(cfg.model.llm.template)
    if not isinstance(tpl, SeparatorTemplate) or not tokenizer.eos_token:
        return None
    system = getattr(cfg.model.llm, "system_prompt", None)
    system = tpl.system if system is None else system
    q = json.dumps  # a JSON string literal is a valid jinja string literal
    text = ("{%- if m['content'] is string -%}{%- set text = m['content'] -%}{%- else -%}{%- set text = "
            "(m['content'] | selectattr('type', 'in', ['image', 'image_url']) | map(attribute='type') | "
            "map('replace', 'image_url', 'image') | map('replace', 'image', '<image>\\n') | join('')) + "
            "(m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ')) -%}"
            "{%- endif -%}")
    jinja = ("{%- set ns = namespace(system=" + q(system) + ", msgs=messages) -%}"
             "{%- if messages and messages[0]['role'] == 'system' -%}{%- set m = messages[0] -%}" + text +
             "{%- set ns.system = text -%}{%- set ns.msgs = messages[1:] -%}{%- endif -%}"
             "{%- if ns.system -%}{{ ns.system + " + q(tpl.system_sep) + " }}{%- endif -%}"
             "{%- for m in ns.msgs -%}" + text +
             "{%- if m['role'] == 'user' -%}{{ (" + q(tpl.first_user_prefix) + " if loop.first else " +
             q(tpl.user_prefix) + ") + text + " + q(tpl.assistant_prefix) + " }}"
             "{%- elif m['role'] == 'assistant' -%}{{ ' ' + text + " +
             q(tpl.terminator.replace("{eos}", str(tokenizer.eos_token))) + " }}{%- endif -%}{%- endfor -%}")
    probe = [{"role": "user", "content": "<image>\nWhat is shown?"}, {"role": "assistant", "content": "A cat."},
             {"role": "user", "content": "And then?"}]
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown?"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
             {"role": "user", "content": "And then?"}]
    ours = render(cfg_template(cfg), probe, tokenizer, add_generation_prompt=True)[0]
    try:
        theirs = [tokenizer.apply_chat_template(c, tokenize=False, chat_template=jinja, add_generation_prompt=True)
                  for c in (probe, parts)]
    except Exception:  # noqa: BLE001 - a template jinja cannot run is simply not written
        return None
    return jinja if theirs == [ours, ours] else None


def cfg_template(cfg: Config) -> Any:
    """The run's template with its system prompt (model.llm.system_prompt) applied."""
    from skillgpt.data import templates

    maker = getattr(templates, "llm_template", None)
    return maker(cfg.model.llm) if maker else templates.get_template(cfg.model.llm.template)


def export_llava(cfg: Config, model: Any, tokenizer: PreTrainedTokenizerBase, out: Path) -> Path:
    """Write a LlavaForConditionalGeneration folder + LlavaProcessor files (see the module doc)."""
    import torch
    from transformers import AddedToken, AutoImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    encoder = _llava_shape(cfg, model)
    llm = merged_llm(model)
    _new_folder(out)
    if IMAGE_TOKEN not in tokenizer.get_vocab():  # as LLaVA-HF's conversion adds it
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text_config = llm.config.__class__.from_dict(llm.config.to_dict())
    vocab = max(len(tokenizer), int(text_config.vocab_size))
    text_config.vocab_size = vocab
    has_cls, keep_cls = encoder.spec.has_cls, encoder.keep_cls
    n_tokens = model.num_tokens("image")
    config = LlavaConfig(
        vision_config=encoder.model.config.to_dict() | {"model_type": encoder.model.config.model_type},
        text_config=text_config.to_dict(), image_token_index=image_id, image_seq_length=n_tokens,
        projector_hidden_act="gelu" if cfg.model.projector.name == "mlp2x_gelu" else "linear",
        vision_feature_layer=encoder.select_layer,
        vision_feature_select_strategy="default" if has_cls and not keep_cls else "full",
        multimodal_projector_bias=True, tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)))
    config.dtype = next(llm.parameters()).dtype
    with torch.device("meta"):
        target = LlavaForConditionalGeneration(config)
    width = int(text_config.hidden_size)
    decoder = llm.get_decoder()
    embed_key = next(n for n, m in decoder.named_modules() if m is decoder.get_input_embeddings()) + ".weight"
    state = {f"model.language_model.{k}": (_with_image_row(v, vocab) if k == embed_key else v)
             for k, v in decoder.state_dict().items()}
    state["lm_head.weight"] = _with_image_row(llm.get_output_embeddings().weight, vocab)
    state.update({f"model.vision_tower.{k}": v for k, v in encoder.model.state_dict().items()})
    state.update({f"model.multi_modal_projector.{k}": v
                  for k, v in _projector_state(cfg, model.projector["video"], width).items()})
    expected = set(target.state_dict())
    missing = sorted(expected - set(state) - ({"lm_head.weight"} if config.tie_word_embeddings else set()))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"--format llava: weights do not fit LlavaForConditionalGeneration "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    dtype = config.dtype
    target.load_state_dict({k: v.detach().to(dtype).contiguous() for k, v in state.items()}, strict=False, assign=True)
    if config.tie_word_embeddings:
        target.tie_weights()
    target.save_pretrained(out)
    processor = LlavaProcessor(
        image_processor=AutoImageProcessor.from_pretrained(encoder.folder), tokenizer=tokenizer,
        patch_size=encoder.image_size // encoder.grid,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        image_token=IMAGE_TOKEN, num_additional_image_tokens=int(has_cls), chat_template=chat_template(cfg, tokenizer))
    processor.save_pretrained(out)
    processor.image_processor.save_pretrained(out)  # preprocessor_config.json too: loaders before transformers 5
    save_config(cfg, out / "skillgpt_config.yaml")
    return out


def export(run: str | Path, out: str | Path, fmt: str = "merged", overrides: Sequence[str] = ()) -> Path:
    """Export checkpoint (or run folder) `run` to `out` in `fmt` (merged | llava); returns `out`."""
    import torch

    if fmt not in FORMATS:
        raise ValueError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    cfg, model, tokenizer = load_run(run, overrides)
    writer = export_merged if fmt == "merged" else export_llava
    with torch.no_grad():
        return writer(cfg, model, tokenizer, Path(out))


def _export_command(args: argparse.Namespace) -> None:
    from skillgpt.checkpoint.flags import location_overrides

    out = export(args.run, args.out, args.format, location_overrides(args) + args.overrides)
    print(f"exported ({args.format}) to {out}")


def add_export_command(sub: Any) -> None:
    """Register `skillgpt export RUN --out DIR [--format merged|llava]`."""
    from skillgpt.checkpoint.flags import add_location_flags

    p = sub.add_parser("export", help="export a checkpoint to plain transformers (merged LLM or LLaVA-HF)")
    p.add_argument("run", help="checkpoint folder, or a run folder (its newest checkpoint)")
    p.add_argument("--out", required=True, help="new folder to write")
    p.add_argument("--format", default="merged", choices=FORMATS,
                   help="merged: HF causal LM (LoRA merged) + projector; llava: LlavaForConditionalGeneration "
                   "(default: merged)")
    p.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. model.llm.dtype=float32)")
    add_location_flags(p)
    p.set_defaults(func=_export_command)
