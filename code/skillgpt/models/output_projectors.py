"""Output projectors: LLM hidden states at signal-token positions -> a diffusion decoder's conditioning.

NExT-GPT (`TextFcLayer`, NExT-GPT-Lagacy/code/model/layers.py) keeps one `nn.ModuleList` per modality,
one projector per LLM layer listed in `text_emb_to_{img,video,audio}_layers` (default `[-1]`):

- `gen_text_hidden_fcs` (image): out_dim 768, 77 output tokens (Stable Diffusion's CLIP text states);
- `gen_text_hidden_fcs_video`: out_dim 1024, 77 output tokens (ZeroScope);
- `gen_text_hidden_fcs_audio`: out_dim 512, 1 output token (AudioLDM).

Each projector takes the hidden states of the signal tokens ([IMG0..3], [VID0..23], [AUD0..7]) of its
layer, [B, n_sig, D_llm], plus the LLM's input embeddings of those tokens, and returns
[B, num_output_tokens, out_dim]; the per-layer outputs are summed (`apply_output_projectors`).
Module and parameter names here are NExT-GPT's, so its checkpoint tensors load strictly.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

# modality -> (NExT-GPT attribute, out_dim, num_output_tokens) as NextGPTModel.__init__ builds them
NEXTGPT_MODALITIES: dict[str, tuple[str, int, int]] = {
    "image": ("gen_text_hidden_fcs", 768, 77),
    "video": ("gen_text_hidden_fcs_video", 1024, 77),
    "audio": ("gen_text_hidden_fcs_audio", 512, 1),
}
_KEY = re.compile(r"^(gen_text_hidden_fcs(?:_video|_audio)?)\.(\d+)\.(.+)$")


@dataclass
class OutputProjectorConfig:
    """One projector. The transformer settings default to NExT-GPT's (hard-coded there)."""

    kind: str = "transformer"  # registry key of OUTPUT_PROJECTORS
    in_dim: int = 4096  # LLM hidden size
    out_dim: int = 768  # decoder conditioning width
    num_output_tokens: int = 77  # transformer: learned queries; linear: keep at most this many tokens
    hidden_dim: int = 512  # transformer width
    num_heads: int = 4
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    ffn_mult: int = 4  # dim_feedforward = ffn_mult * hidden_dim
    dropout: float = 0.0


class LinearOutputProjector(nn.Module):
    """NExT-GPT 'linear': one nn.Linear per token (`model`), keeping the first num_output_tokens tokens.

    NExT-GPT's own forward never sets its output in this mode (it raises); this is the evident
    intent: input_embs is accepted for a uniform call but not used.
    """

    def __init__(self, cfg: OutputProjectorConfig) -> None:
        super().__init__()
        self.num_output_tokens = cfg.num_output_tokens
        self.model = nn.Linear(cfg.in_dim, cfg.out_dim)

    def forward(self, hidden: Tensor, input_embs: Tensor | None = None) -> Tensor:
        return self.model(hidden)[:, : self.num_output_tokens]


class TransformerOutputProjector(nn.Module):
    """NExT-GPT 'transformer': (hidden + input_embs) -> `fc` -> pre-LN nn.Transformer (`tfm`) whose
    decoder reads `num_output_tokens` learned queries (`query_embs`) -> `model` (Linear to out_dim)."""

    def __init__(self, cfg: OutputProjectorConfig) -> None:
        super().__init__()
        h = cfg.hidden_dim
        self.num_output_tokens = cfg.num_output_tokens
        self.fc = nn.Linear(cfg.in_dim, h)
        layer = nn.TransformerEncoderLayer(h, cfg.num_heads, cfg.ffn_mult * h, cfg.dropout,
                                           batch_first=True, norm_first=True)
        # the custom encoder only avoids nn.Transformer's nested-tensor warning; names are unchanged
        encoder = nn.TransformerEncoder(layer, cfg.num_encoder_layers, norm=nn.LayerNorm(h),
                                        enable_nested_tensor=False)
        self.tfm = nn.Transformer(d_model=h, nhead=cfg.num_heads, num_encoder_layers=cfg.num_encoder_layers,
                                  num_decoder_layers=cfg.num_decoder_layers, dim_feedforward=cfg.ffn_mult * h,
                                  dropout=cfg.dropout, custom_encoder=encoder, batch_first=True,
                                  norm_first=True)
        self.model = nn.Linear(h, cfg.out_dim)
        self.query_embs = nn.Parameter(torch.randn(1, cfg.num_output_tokens, h))

    def forward(self, hidden: Tensor, input_embs: Tensor | None = None) -> Tensor:
        x = hidden if input_embs is None else hidden + input_embs
        x = self.fc(x)
        x = self.tfm(x, self.query_embs.expand(x.shape[0], -1, -1))
        return self.model(x)


OUTPUT_PROJECTORS: dict[str, Callable[[OutputProjectorConfig], nn.Module]] = {
    "linear": LinearOutputProjector,
    "transformer": TransformerOutputProjector,
}


def build_output_projector(cfg: OutputProjectorConfig | Mapping[str, object]) -> nn.Module:
    """Build a projector from a config (or a dict of its fields)."""
    if not isinstance(cfg, OutputProjectorConfig):
        known = {f.name for f in fields(OutputProjectorConfig)}
        extra = sorted(set(cfg) - known)
        if extra:
            raise ValueError(f"unknown output projector settings {extra}; known: {sorted(known)}")
        cfg = OutputProjectorConfig(**cfg)  # type: ignore[arg-type]
    if cfg.kind not in OUTPUT_PROJECTORS:
        raise ValueError(f"unknown output projector kind {cfg.kind!r}; known: {sorted(OUTPUT_PROJECTORS)}")
    return OUTPUT_PROJECTORS[cfg.kind](cfg)


def apply_output_projectors(projectors: Sequence[nn.Module], hidden_states: Sequence[Tensor],
                            input_embs: Tensor | None = None) -> Tensor:
    """NExT-GPT's combination: projector i on the signal-token hidden states of layer i, outputs summed."""
    if len(projectors) != len(hidden_states):
        raise ValueError(f"{len(projectors)} projectors but hidden states of {len(hidden_states)} layers")
    outs = [p(h, input_embs) for p, h in zip(projectors, hidden_states)]
    return torch.stack(outs, dim=-1).sum(dim=-1)


def infer_nextgpt_config(tensors: Mapping[str, Tensor], **overrides: object) -> OutputProjectorConfig:
    """Config of one NExT-GPT TextFcLayer from its tensors (keys without the `<attr>.<i>.` prefix).

    Head count cannot be read from weights: it is NExT-GPT's 4 unless overridden.
    """
    if any(k.startswith("Qformer.") or k == "query_tokens" for k in tensors):
        raise NotImplementedError("NExT-GPT 'qformer' output projectors are not supported")
    if "model.weight" not in tensors:
        raise ValueError(f"not a NExT-GPT TextFcLayer: no 'model.weight' among {sorted(tensors)[:8]}")
    out_dim, width = tensors["model.weight"].shape
    if "query_embs" not in tensors:
        cfg = OutputProjectorConfig(kind="linear", in_dim=width, out_dim=out_dim)
    else:
        def count(part: str) -> int:
            idx = {int(m.group(1)) for k in tensors if (m := re.match(rf"tfm\.{part}\.layers\.(\d+)\.", k))}
            return max(idx) + 1 if idx else 0

        ffn = tensors.get("tfm.encoder.layers.0.linear1.weight")
        cfg = OutputProjectorConfig(
            kind="transformer", in_dim=tensors["fc.weight"].shape[1] if "fc.weight" in tensors else width,
            out_dim=out_dim, num_output_tokens=tensors["query_embs"].shape[1], hidden_dim=width,
            num_encoder_layers=count("encoder"), num_decoder_layers=count("decoder"),
            ffn_mult=ffn.shape[0] // width if ffn is not None else 4)
    return replace(cfg, **overrides)  # type: ignore[arg-type]


def load_nextgpt_output_projectors(
    state_dict: Mapping[str, Tensor], modalities: Sequence[str] | None = None, prefix: str = "",
    configs: Mapping[str, OutputProjectorConfig] | None = None,
) -> dict[str, nn.ModuleList]:
    """Load NExT-GPT's `gen_text_hidden_fcs{,_video,_audio}.<i>.*` tensors into per-modality projectors.

    state_dict: a checkpoint's tensors (other keys such as llama_proj or LoRA are ignored); prefix is
    stripped first (e.g. "module."). modalities: which of image/video/audio must be present (default:
    those found). configs: per modality, the projector config (default: read from the tensors). Every
    projector is loaded strictly; a ValueError names the missing and unexpected keys.
    """
    groups: dict[str, dict[int, dict[str, Tensor]]] = {}
    attr_to_mod = {attr: mod for mod, (attr, _, _) in NEXTGPT_MODALITIES.items()}
    bad: list[str] = []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        m = _KEY.match(name)
        if m is None:
            if name.startswith("gen_text_hidden_fcs"):
                bad.append(key)
            continue
        groups.setdefault(attr_to_mod[m.group(1)], {}).setdefault(int(m.group(2)), {})[m.group(3)] = value
    wanted = list(modalities) if modalities is not None else [m for m in NEXTGPT_MODALITIES if m in groups]
    unknown = [m for m in wanted if m not in NEXTGPT_MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {list(NEXTGPT_MODALITIES)}")
    absent = [f"{prefix}{NEXTGPT_MODALITIES[m][0]}.0.*" for m in wanted if m not in groups]
    if absent or bad:
        raise ValueError(f"NExT-GPT output projector keys: missing {absent}, unexpected {bad}")

    result: dict[str, nn.ModuleList] = {}
    for mod in wanted:
        layers = groups[mod]
        attr = NEXTGPT_MODALITIES[mod][0]
        if sorted(layers) != list(range(len(layers))):
            raise ValueError(f"{prefix}{attr}: layer indices {sorted(layers)} are not 0..{len(layers) - 1}")
        projs = nn.ModuleList()
        for i in range(len(layers)):
            tensors = layers[i]
            cfg = configs[mod] if configs and mod in configs else infer_nextgpt_config(tensors)
            proj = build_output_projector(cfg)
            missing, unexpected = proj.load_state_dict(tensors, strict=False)
            if missing or unexpected:
                head = f"{prefix}{attr}.{i}."
                raise ValueError(f"NExT-GPT output projector {head[:-1]} ({cfg.kind}): missing "
                                 f"{[head + k for k in missing]}, unexpected {[head + k for k in unexpected]}")
            projs.append(proj)
        result[mod] = projs
    return result
