"""NExT-GPT (``NExT-GPT-Lagacy``) delta checkpoints -> SkillGPT checkpoints, encoder and decoder side.

NExT-GPT's ``pytorch_model.pt`` (``DeepSpeedAgent.save_model``: every ``requires_grad`` parameter plus every
``gen_text_hidden_fcs*`` and ``llama_proj`` tensor) holds PandaGPT's layout (``llama_proj``, peft LoRA keys) and

- the vocabulary: ``NextGPTModel.__init__`` adds ``<Img>``, ``</Img>``, ``[IMG0..3]``, ``[VID0..23]``,
  ``[AUD0..7]`` (``add_tokens``, in that order) and calls ``resize_token_embeddings`` after LoRA is applied, which
  creates a new, trainable ``embed_tokens`` and ``lm_head``: the checkpoint stores both FULL resized matrices
  (``llama_model.base_model.model.model.embed_tokens.weight`` / ``...lm_head.weight``, [V + 38, D]; without
  LoRA ``llama_model.model.embed_tokens.weight`` / ``llama_model.lm_head.weight``);
- the output projectors: ``gen_text_hidden_fcs`` (image), ``gen_text_hidden_fcs_video``,
  ``gen_text_hidden_fcs_audio``, one ``TextFcLayer`` per entry of ``text_emb_to_{img,video,audio}_layers``
  (``<attr>.<i>.<parameter>``, loaded by ``skillgpt.models.output_projectors.load_nextgpt_output_projectors``).

What the SkillGPT checkpoint gets:

- ``base-llm/``: the base LLM with the 38 tokens and the stored rows, except the rows of the signal tokens of
  every modality with output projectors: those hold the mean of the base vocabulary's rows (rows 0..V-1 of
  the stored matrices, float32), the centre transformers' ``resize_token_embeddings`` initialises new rows at;
- ``generation.safetensors``: ``model.generation``'s state, built by SkillGPT's own ``GenerationHead`` so the
  names are the ones a run loads: ``rows.embed_delta`` / ``rows.head_delta`` ([n, D], rows in SkillGPT's
  signal-token order image, video, audio) = stored row - base-llm row, and ``projectors.<modality>.<i>.*``;
  a run's signal-token rows (base row + delta, SignalRows' hooks) are then the stored rows (float32 rounding);
- ``config.yaml``: ``model.generation`` with NExT-GPT's token counts (4 / 24 / 8, 0 for a modality without
  projectors), the projector kind and sizes read from the tensors, ``[tokens, width]`` of each modality's output
  and ``llm_layers: [-1]`` (NExT-GPT's default; with several projectors per modality, give the layers:
  ``--set model.generation.llm_layers=[-1,-2]``, NExT-GPT's ``text_emb_to_*_layers``); ``freeze.generation: full``.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from skillgpt.checkpoint.importers.common import load_state, write_checkpoint
from skillgpt.checkpoint.importers.pandagpt import (
    _adapter, _config, _delta_file, _hidden_size, _linear_check, _require_llm, split_delta,
)

NEXTGPT_OUTPUT = re.compile(r"gen_text_hidden_fcs(_video|_audio)?\..*")
NEXTGPT_VOCAB = re.compile(r"llama_model\.(?:base_model\.model\.)?(model\.embed_tokens\.weight|lm_head\.weight)")
NEXTGPT_TOKENS = (["<Img>", "</Img>"] + [f"[IMG{i}]" for i in range(4)] + [f"[VID{i}]" for i in range(24)]
                  + [f"[AUD{i}]" for i in range(8)])
EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def _projectors(path: Path, tensors: Mapping[str, torch.Tensor], width: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """({modality: ModuleList of loaded projectors}, model.generation settings) from the gen_text_hidden_fcs*
    tensors; one projector kind and transformer size for all, as model.generation describes them."""
    from skillgpt.models.output_projectors import NEXTGPT_MODALITIES, infer_nextgpt_config, load_nextgpt_output_projectors
    from skillgpt.models.signal_tokens import NEXTGPT_COUNTS

    try:
        loaded = load_nextgpt_output_projectors(tensors)
    except (ValueError, NotImplementedError) as err:
        raise ValueError(f"{path}: {err}") from err
    configs = {}
    for modality, projs in loaded.items():
        attr = NEXTGPT_MODALITIES[modality][0]
        for i in range(len(projs)):
            head = f"{attr}.{i}."
            cfg = infer_nextgpt_config({k[len(head):]: v for k, v in tensors.items() if k.startswith(head)})
            if cfg.kind == "linear":  # the token count is not in a Linear's tensors: NExT-GPT's (77 / 77 / 1)
                cfg.num_output_tokens = NEXTGPT_MODALITIES[modality][2]
                projs[i].num_output_tokens = cfg.num_output_tokens
            if cfg.in_dim != width:
                raise ValueError(f"{path}: {head}* takes hidden states of width {cfg.in_dim}; the base LLM's is {width}")
            configs[f"{head}*"] = cfg
    first = next(iter(configs.values()))
    shared = ("kind", "hidden_dim", "num_heads", "num_encoder_layers", "num_decoder_layers", "ffn_mult", "dropout")
    differ = [name for name, cfg in configs.items() if any(getattr(cfg, f) != getattr(first, f) for f in shared)]
    if differ:
        raise ValueError(f"{path}: output projectors of different kinds or sizes ({differ[0]} differs from "
                         f"{next(iter(configs))}); model.generation holds one kind and size for all")
    if first.ffn_mult != 4:
        raise ValueError(f"{path}: output projector feed-forward width {first.ffn_mult} x hidden; model.generation "
                         "builds NExT-GPT's 4 x")
    layers = {m: len(p) for m, p in loaded.items()}
    if len(set(layers.values())) != 1:
        raise ValueError(f"{path}: the modalities have different numbers of output projectors {layers}; "
                         "model.generation.llm_layers holds one list for all")
    out_shape = {}
    for modality, projs in loaded.items():
        cfgs = [configs[f"{NEXTGPT_MODALITIES[modality][0]}.{i}.*"] for i in range(len(projs))]
        shapes = {(c.num_output_tokens, c.out_dim) for c in cfgs}
        if len(shapes) != 1:
            raise ValueError(f"{path}: the {modality} projectors have different output shapes {sorted(shapes)}")
        out_shape[modality] = list(shapes.pop())
    settings: dict[str, Any] = {
        **{f"{m}_tokens": (NEXTGPT_COUNTS[m] if m in loaded else 0) for m in NEXTGPT_COUNTS},
        **{f"{m}_shape": out_shape[m] for m in loaded},
        "projector": first.kind, "llm_layers": [-1],  # NExT-GPT's default text_emb_to_*_layers
    }
    if first.kind == "transformer":
        settings.update(hidden_dim=first.hidden_dim, heads=first.num_heads, encoder_layers=first.num_encoder_layers,
                        decoder_layers=first.num_decoder_layers)
    return loaded, settings


def _extended_llm(path: Path, base_llm: Path, vocab: Mapping[str, torch.Tensor], folder: Path,
                  gen: Any = None, projectors: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor] | None:
    """Write the base LLM and tokenizer with NExT-GPT's added tokens and its resized embedding rows to `folder`.
    With `gen` (model.generation), the signal tokens of its modalities get the base vocabulary's mean row there
    and their stored rows become the deltas of the returned generation state (with the `projectors`' weights)."""
    from transformers import AddedToken, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_llm)
    base_vocab = len(tokenizer)
    # the order of NExT-GPT's _add_{image,video,audio}_token; lstrip: its slow Llama tokenizer drops the
    # whitespace before an added token ("### Human: <Img>" is "### Human:" + "<Img>")
    tokenizer.add_tokens([AddedToken(t, lstrip=True, rstrip=False, normalized=False) for t in NEXTGPT_TOKENS])
    model = AutoModelForCausalLM.from_pretrained(base_llm, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer))
    targets = {EMBED: model.get_input_embeddings().weight, HEAD: model.get_output_embeddings().weight}
    for key, value in vocab.items():
        name = NEXTGPT_VOCAB.fullmatch(key).group(1)  # type: ignore[union-attr]
        if tuple(value.shape) != tuple(targets[name].shape):
            raise ValueError(f"{path}: {key} has shape {list(value.shape)}, the base LLM with NExT-GPT's "
                             f"{len(NEXTGPT_TOKENS)} added tokens needs {list(targets[name].shape)}")
        with torch.no_grad():
            targets[name].copy_(value.float())
    state = None
    if gen is not None:
        from skillgpt.models.build import generation_head

        head = generation_head(gen, model, tokenizer)  # SkillGPT's own head: its names are the ones a run loads
        ids = head.rows.ids
        rows = {EMBED: head.rows.embed_delta, HEAD: head.rows.embed_delta if head.rows.tied else head.rows.head_delta}
        with torch.no_grad():
            for name in (EMBED, HEAD) if not head.rows.tied else (EMBED,):
                weight = targets[name]
                stored = weight[ids].clone()
                weight[ids] = weight[:base_vocab].float().mean(dim=0).to(weight.dtype)
                rows[name].copy_(stored - weight[ids])
            for modality, projs in (projectors or {}).items():
                head.projectors[modality].load_state_dict(projs.state_dict(), strict=True)
        head.rows.remove()
        state = {k: v.detach().float().contiguous() for k, v in head.state_dict().items()}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return state


def import_nextgpt(src: Path, out: Path, base_llm: Path | None, **options: Any) -> Path:
    """NExT-GPT delta (``pytorch_model.pt`` or its folder) + the Vicuna base -> SkillGPT run folder: projector,
    LoRA, vocabulary (base-llm/) and, when it holds ``gen_text_hidden_fcs*``, generation.safetensors.
    Options: encoder, lora_alpha, lora_dropout, settings (config overrides, e.g. model.generation.llm_layers)."""
    path = _delta_file(src)
    llm = _require_llm(base_llm, "NExT-GPT")
    extra = re.compile(f"(?:{NEXTGPT_OUTPUT.pattern})|(?:{NEXTGPT_VOCAB.pattern})")
    projector, lora, other = split_delta(path, load_state(path), extra)
    vocab = {k: v for k, v in other.items() if NEXTGPT_VOCAB.fullmatch(k)}
    outputs = {k: v.float() for k, v in other.items() if NEXTGPT_OUTPUT.fullmatch(k)}
    width = _hidden_size(llm)
    _linear_check(path, projector, width)
    loaded, settings = None, {}
    if outputs:
        if not any(NEXTGPT_VOCAB.fullmatch(k).group(1) == EMBED for k in vocab):  # type: ignore[union-attr]
            raise ValueError(f"{path}: has output projectors (gen_text_hidden_fcs*) but not the signal tokens' rows "
                             "(missing llama_model.base_model.model.model.embed_tokens.weight)")
        loaded, gen_settings = _projectors(path, outputs, width)
        settings = {"model.generation": gen_settings}  # NExT-GPT's; the user's --set comes after
    cfg = _config(out, llm, options, "vicuna-7b-v0", settings)
    cfg.model.encoder.out_dim = int(projector["video.weight"].shape[1])
    gen = cfg.model.generation if loaded else None
    if loaded:
        from skillgpt.models.signal_tokens import NEXTGPT_COUNTS

        counts = {m: n for m, n in gen.counts().items() if m in loaded and n != NEXTGPT_COUNTS[m]}
        if counts:
            raise ValueError(f"model.generation: {counts} signal tokens; NExT-GPT's checkpoint has {NEXTGPT_COUNTS}")
        n_layers = len(next(iter(loaded.values())))
        if len(gen.llm_layers) != n_layers:
            raise ValueError(f"{path}: {n_layers} output projectors per modality but model.generation.llm_layers is "
                             f"{list(gen.llm_layers)}; give NExT-GPT's text_emb_to_*_layers with "
                             f"--set model.generation.llm_layers=[...] ({n_layers} entries)")
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        folder, generation = None, None
        if vocab:
            folder = Path(tmp) / "llm"
            generation = _extended_llm(path, llm, vocab, folder, gen, loaded)
        return write_checkpoint(out, cfg, projector=projector, adapter=_adapter(path, lora, options), llm=folder,
                                generation=generation,
                                source={"system": "nextgpt", "file": str(path.absolute()),
                                        "generation": sorted(loaded) if loaded else [],
                                        "base_llm": str(llm.absolute())})

