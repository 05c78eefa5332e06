"""Caption embeddings from a diffusion decoder's own text encoder, computed once and cached (NExT-GPT stage 2).

The cached tensor of a caption equals the decoder pipeline's own ``prompt_embeds`` for that caption:
Stable Diffusion / ZeroScope: CLIP ``last_hidden_state`` of the ids padded to ``model_max_length`` (77),
truncated, attention mask only when the encoder's config sets ``use_attention_mask``: ``[77, D]``;
AudioLDM: CLAP ``text_embeds`` (ids padded to ``model_max_length``, with the attention mask), L2-normalised,
stored as ``[1, 512]`` (one token, as the audio output projector's output).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from skillgpt.hashing import file_sha256

MODALITIES = ("image", "video", "audio")
ENCODER_TYPE = {"image": "clip_text_model", "video": "clip_text_model", "audio": "clap_text_model"}
ENCODER_CLASS = {"clip_text_model": "CLIPTextModel", "clap_text_model": "ClapTextModelWithProjection"}
DECODER_NAME = {"image": "Stable Diffusion", "video": "a text-to-video pipeline such as ZeroScope",
                "audio": "AudioLDM"}
INDEX = "index.json"


class CaptionDataError(ValueError):
    """A bad T-X pair dataset: the message names the file, the record index and the field."""


def caption_key(caption: str) -> str:
    """The stable key of a caption: hex SHA-256 of its exact UTF-8 text."""
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {'|'.join(MODALITIES)}, got {modality!r}")


def _encoder_config(decoder_dir: Path, modality: str) -> Path:
    """Checks the folder layout and the encoder type; returns text_encoder/config.json."""
    _check_modality(modality)
    expected = (f"a local diffusers pipeline folder of {DECODER_NAME[modality]} holding text_encoder/ "
                f"(config.json + weights of a {ENCODER_CLASS[ENCODER_TYPE[modality]]}) and tokenizer/")
    if not decoder_dir.is_dir():
        raise FileNotFoundError(f"{decoder_dir}: decoder folder not found; expected {expected}")
    for sub in ("text_encoder", "tokenizer"):
        if not (decoder_dir / sub).is_dir():
            raise FileNotFoundError(f"{decoder_dir}: no {sub}/ folder; expected {expected}")
    config = decoder_dir / "text_encoder" / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config}: not found; expected {expected}")
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    if model_type != ENCODER_TYPE[modality]:
        raise ValueError(f"{decoder_dir}: text_encoder is a {model_type!r} model, but modality {modality!r} "
                         f"expects {ENCODER_TYPE[modality]!r} ({DECODER_NAME[modality]})")
    return config


def load_text_encoder(decoder_dir: Path, modality: str, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(text encoder in eval mode, tokenizer) from `decoder_dir`/text_encoder and /tokenizer, local files only."""
    import transformers

    decoder_dir = Path(decoder_dir)
    _encoder_config(decoder_dir, modality)
    model_cls = getattr(transformers, ENCODER_CLASS[ENCODER_TYPE[modality]])
    tok_cls: Any = transformers.AutoTokenizer
    model_index = decoder_dir / "model_index.json"
    if model_index.is_file():  # the tokenizer class the pipeline itself would load
        entry = json.loads(model_index.read_text(encoding="utf-8")).get("tokenizer")
        if isinstance(entry, list) and len(entry) == 2 and entry[0] == "transformers":
            tok_cls = getattr(transformers, entry[1], tok_cls)
    tokenizer = tok_cls.from_pretrained(decoder_dir / "tokenizer", local_files_only=True)
    model = model_cls.from_pretrained(decoder_dir / "text_encoder", dtype=dtype, local_files_only=True)
    return model.eval().requires_grad_(False), tokenizer


@torch.no_grad()  # not inference_mode: the results are regression targets used under autograd
def encode_captions(text_encoder: Any, tokenizer: Any, captions: Sequence[str],
                    device: torch.device | str | None = None) -> Tensor:
    """The pipeline's ``prompt_embeds`` for `captions`: ``[B, 77, D]`` (CLIP) or ``[B, 512]`` (CLAP)."""
    device = device or next(text_encoder.parameters()).device
    ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt")
    if text_encoder.config.model_type == "clap_text_model":  # AudioLDM: projected, normalised, mask used
        out = text_encoder(ids.input_ids.to(device), attention_mask=ids.attention_mask.to(device)).text_embeds
        out = F.normalize(out, dim=-1)
    else:  # Stable Diffusion / ZeroScope: last hidden state, mask only if the config asks for it
        mask = ids.attention_mask.to(device) if getattr(text_encoder.config, "use_attention_mask", False) else None
        out = text_encoder(ids.input_ids.to(device), attention_mask=mask)[0]
    return out.to(text_encoder.dtype)


def _caption_of(record: Any, path: Path, i: int) -> str:
    """The caption of one record: its `generate.caption` (SkillGPT stage-2 samples), its `caption`, or the last
    `gpt` turn of its LLaVA `conversations`."""
    where = f"{path}: record {i}"
    if not isinstance(record, dict):
        raise CaptionDataError(f"{where}: expected an object, got {type(record).__name__}")
    if isinstance(record.get("generate"), dict):  # a SkillGPT stage-2 sample: the caption it is aligned to
        value, field = record["generate"].get("caption"), "generate.caption"
    elif "caption" in record:
        value, field = record["caption"], "caption"
    elif "conversations" in record:
        turns = record["conversations"]
        if not isinstance(turns, list):
            raise CaptionDataError(f"{where}: field 'conversations': expected a list of turns")
        gpt = [k for k, t in enumerate(turns) if isinstance(t, dict) and t.get("from") == "gpt"]
        if not gpt:
            raise CaptionDataError(f"{where}: field 'conversations': no 'gpt' turn to take the caption from")
        value, field = turns[gpt[-1]].get("value"), f"conversations[{gpt[-1]}].value"
    else:
        raise CaptionDataError(f"{where}: no 'caption' field (and no LLaVA 'conversations')")
    if not isinstance(value, str) or not value.strip():
        raise CaptionDataError(f"{where}: field '{field}': expected a non-empty string, got {value!r}")
    return value


def read_captions(data_file: Path) -> list[str]:
    """Every record's caption, in file order (duplicates kept)."""
    from skillgpt.data.dataset import read_json_list

    path = Path(data_file)
    return [_caption_of(r, path, i) for i, r in enumerate(read_json_list(path, CaptionDataError))]


def _write_index(out_dir: Path, index: dict[str, Any]) -> None:
    """index.json, replaced atomically (a crash leaves the previous, consistent index)."""
    tmp = out_dir / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=1), encoding="utf-8")
    os.replace(tmp, out_dir / INDEX)


def _open_index(out_dir: Path, modality: str, config_hash: str, decoder_dir: Path) -> dict[str, Any]:
    """The existing index (checked against this decoder and modality) or a fresh one."""
    path = out_dir / INDEX
    if not path.is_file():
        return {"format": 1, "modality": modality, "decoder": str(decoder_dir),
                "text_encoder_config_sha256": config_hash, "shape": None, "dtype": None,
                "count": 0, "truncated": 0, "shards": [], "captions": {}}
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("modality") != modality or index.get("text_encoder_config_sha256") != config_hash:
        raise ValueError(f"{out_dir}: cache was made for modality {index.get('modality')!r} with text encoder "
                         f"config {str(index.get('text_encoder_config_sha256'))[:12]} ({index.get('decoder')}); "
                         f"this run is {modality!r} with {config_hash[:12]} ({decoder_dir}): use another --out")
    present = {s for s in index["shards"] if (out_dir / s).is_file()}
    if len(present) < len(index["shards"]):  # a deleted shard: its captions are encoded again
        index["shards"] = [s for s in index["shards"] if s in present]
        index["captions"] = {k: s for k, s in index["captions"].items() if s in present}
        index["count"] = len(index["captions"])
    return index


def _next_shard(out_dir: Path, index: dict[str, Any]) -> int:
    names = set(index["shards"]) | {p.name for p in out_dir.glob("shard-*.safetensors")}
    numbers = [int(n[len("shard-"):-len(".safetensors")]) for n in names
               if n[len("shard-"):-len(".safetensors")].isdigit()]
    return max(numbers, default=-1) + 1


def cache_caption_embeddings(data_file: Path, decoder_dir: Path, modality: str, out_dir: Path,
                             batch_size: int = 16, shard_size: int = 1024,
                             device: str | None = None, progress: bool = True) -> Path:
    """Encode every distinct caption of `data_file` not yet in `out_dir`; returns `out_dir`.

    Layout: ``shard-00000.safetensors`` ... (one tensor per caption, key `caption_key(caption)`) and
    ``index.json`` (caption key -> shard, shape, dtype, modality, count, text-encoder config SHA-256, and how
    many captions were truncated at the tokenizer's maximum length, as the pipeline truncates them).
    """
    from safetensors.torch import save_file
    from tqdm import tqdm

    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    decoder_dir, out_dir = Path(decoder_dir), Path(out_dir)
    config_hash = file_sha256(_encoder_config(decoder_dir, modality))
    captions = list(dict.fromkeys(read_captions(data_file)))  # distinct, first-seen order
    out_dir.mkdir(parents=True, exist_ok=True)
    index = _open_index(out_dir, modality, config_hash, decoder_dir)
    todo = [c for c in captions if caption_key(c) not in index["captions"]]
    if not todo:
        return out_dir
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    text_encoder, tokenizer = load_text_encoder(decoder_dir, modality)
    text_encoder.to(device)
    shard_no, truncated = _next_shard(out_dir, index), index.get("truncated", 0)
    bar = tqdm(total=len(todo), desc=f"{modality} caption embeddings", unit="caption", disable=not progress)
    for start in range(0, len(todo), shard_size):
        tensors: dict[str, Tensor] = {}
        chunk = todo[start:start + shard_size]
        for b in range(0, len(chunk), batch_size):
            batch = chunk[b:b + batch_size]
            lengths = tokenizer(batch, truncation=False, verbose=False)["input_ids"]
            truncated += sum(len(ids) > tokenizer.model_max_length for ids in lengths)
            embeds = encode_captions(text_encoder, tokenizer, batch, device).float().cpu()
            if embeds.dim() == 2:  # AudioLDM's [B, 512]: one token per caption
                embeds = embeds.unsqueeze(1)
            for caption, emb in zip(batch, embeds):
                tensors[caption_key(caption)] = emb.clone().contiguous()
            bar.update(len(batch))
        shape = list(next(iter(tensors.values())).shape)
        if index["shape"] not in (None, shape):
            raise ValueError(f"{out_dir}: cached embeddings have shape {index['shape']}, new ones {shape}")
        name = f"shard-{shard_no:05d}.safetensors"
        save_file(tensors, str(out_dir / name), metadata={"modality": modality})
        index["shards"].append(name)
        index["captions"].update({k: name for k in tensors})
        index.update(shape=shape, dtype="float32", count=len(index["captions"]), truncated=truncated)
        _write_index(out_dir, index)
        shard_no += 1
    bar.close()
    return out_dir


class CaptionEmbeddings:
    """A read-only view of a cache: ``cache[caption]`` -> its tensor (loaded from its shard on demand)."""

    def __init__(self, out_dir: Path) -> None:
        self.root = Path(out_dir)
        path = self.root / INDEX
        if not path.is_file():
            raise FileNotFoundError(f"{self.root}: no {INDEX}; run `skillgpt cache-caption-embeddings` first")
        self.index: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        self.modality: str = self.index["modality"]
        self.shape: tuple[int, ...] = tuple(self.index["shape"] or ())
        self._open: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.index["captions"])

    def __contains__(self, caption: object) -> bool:
        return isinstance(caption, str) and caption_key(caption) in self.index["captions"]

    def __getitem__(self, caption: str) -> Tensor:
        from safetensors import safe_open

        key = caption_key(caption)
        shard = self.index["captions"].get(key)
        if shard is None:
            raise KeyError(f"{self.root}: caption not cached: {caption[:80]!r}")
        if shard not in self._open:
            self._open[shard] = safe_open(str(self.root / shard), framework="pt")
        return self._open[shard].get_tensor(key)


def load_caption_embeddings(out_dir: Path) -> CaptionEmbeddings:
    """The cache written by `cache_caption_embeddings` into `out_dir`."""
    return CaptionEmbeddings(out_dir)


def run_cache_command(args: argparse.Namespace) -> None:
    """`skillgpt cache-caption-embeddings` (its arguments are defined in skillgpt/cli.py, which imports no torch)."""
    out = cache_caption_embeddings(Path(args.data), Path(args.decoder), args.modality, Path(args.out),
                                   batch_size=args.batch_size, shard_size=args.shard_size, device=args.device)
    cache = load_caption_embeddings(out)
    print(f"caption embeddings: {out} ({len(cache)} captions, {args.modality}, shape {list(cache.shape)})")
    if cache.index.get("truncated"):
        print(f"note: {cache.index['truncated']} captions were longer than the tokenizer's maximum length and "
              "were truncated, as the decoder pipeline itself truncates them")
