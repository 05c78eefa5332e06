"""Caption-embedding cache: the cached tensors equal the decoder pipelines' own prompt embeddings.

Tiny random pipeline folders (CLIP / CLAP text encoders of width 32, BPE tokenizers from a tiny vocab) are
written with diffusers' own `save_pretrained`; the pipelines are loaded back from them with diffusers'
`from_pretrained` (UNet, VAE and vocoder left out: the text side does not need them).
"""
from __future__ import annotations

import json
import string
from pathlib import Path

import pytest
import torch

from skillgpt.generation import caption_cache as cc
from skillgpt.generation.caption_cache import (
    CaptionDataError, cache_caption_embeddings, caption_key, encode_captions,
    load_caption_embeddings, load_text_encoder, read_captions,
)

pytest.importorskip("diffusers", reason="the decoder pipelines whose own prompt embeddings are compared")

CAPTIONS = ["a red cat sits on a mat", "two dogs run", "the cat " * 40]  # the last one is truncated


def _bpe_files(folder: Path, specials: list[str], word_end: str, merges: list[str]) -> tuple[str, str]:
    """vocab.json + merges.txt of a tiny byte-level BPE: the specials, the letters, and the merges' results."""
    folder.mkdir(parents=True, exist_ok=True)
    pieces = specials + list(string.ascii_lowercase) + [c + word_end for c in string.ascii_lowercase]
    pieces += ["".join(m.split()) for m in merges]
    vocab = {p: i for i, p in enumerate(dict.fromkeys(pieces))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


def _clip_parts(src: Path, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = _bpe_files(src, ["<|startoftext|>", "<|endoftext|>"], "</w>", ["c a", "ca t</w>", "r e"])
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                            pad_token_id=1)
    return CLIPTextModel(config).eval(), tokenizer


def _clap_parts(src: Path, seed: int):
    from transformers import ClapTextConfig, ClapTextModelWithProjection, RobertaTokenizer

    vocab, merges = _bpe_files(src, ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ"], "", ["Ġ c", "Ġc a"])
    tokenizer = RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=20)
    torch.manual_seed(seed)
    config = ClapTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=24, projection_dim=16)
    return ClapTextModelWithProjection(config).eval(), tokenizer


NO_UNET = {"unet": None, "vae": None}
PIPELINES = {  # modality: (pipeline class name, components the text side leaves out)
    "image": ("StableDiffusionPipeline", {**NO_UNET, "safety_checker": None, "feature_extractor": None,
                                          "image_encoder": None}),
    "video": ("TextToVideoSDPipeline", NO_UNET),
    "audio": ("AudioLDMPipeline", {**NO_UNET, "vocoder": None}),
}


def _pipeline(modality: str, folder: Path | None = None, parts=None):
    """Builds (from `parts`) or loads (from `folder`) the decoder's own pipeline object."""
    import diffusers

    name, left_out = PIPELINES[modality]
    cls = getattr(diffusers, name)
    if folder is not None:
        return cls.from_pretrained(folder, **left_out)
    text_encoder, tokenizer = parts
    extra = {"requires_safety_checker": False} if modality == "image" else {}
    scheduler = diffusers.DDIMScheduler(steps_offset=1, clip_sample=False)
    return cls(text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
               **{k: None for k in left_out if k != "image_encoder"}, **extra)


@pytest.fixture(scope="module")
def decoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """modality -> a tiny local pipeline folder (model_index.json, text_encoder/, tokenizer/, scheduler/)."""
    root = tmp_path_factory.mktemp("decoders")
    out = {}
    for seed, modality in enumerate(PIPELINES):
        build = _clap_parts if modality == "audio" else _clip_parts
        pipe = _pipeline(modality, parts=build(root / f"{modality}-bpe", seed))
        pipe.save_pretrained(root / modality)
        out[modality] = root / modality
    return out


def _own_prompt_embeds(modality: str, folder: Path, captions: list[str]) -> torch.Tensor:
    """What the decoder's pipeline computes for `captions` (no guidance, one sample per prompt)."""
    pipe = _pipeline(modality, folder)
    with torch.no_grad():
        if modality == "audio":
            return pipe._encode_prompt(captions, "cpu", 1, False)
        return pipe.encode_prompt(captions, "cpu", 1, False)[0]


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_embeddings_equal_the_pipelines_own(decoders: dict[str, Path], modality: str) -> None:
    text_encoder, tokenizer = load_text_encoder(decoders[modality], modality)
    ours = encode_captions(text_encoder, tokenizer, CAPTIONS)
    theirs = _own_prompt_embeds(modality, decoders[modality], CAPTIONS)
    assert ours.shape == theirs.shape == ((3, 16) if modality == "audio" else (3, 77, 32))
    assert (ours - theirs).abs().max().item() <= 1e-6
    batched_one_by_one = torch.cat([encode_captions(text_encoder, tokenizer, [c]) for c in CAPTIONS])
    assert (batched_one_by_one - theirs).abs().max().item() <= 1e-6  # padding to max length: no batch effect
    if modality == "audio":
        assert torch.allclose(ours.norm(dim=-1), torch.ones(3), atol=1e-6)


def _write(path: Path, records: object) -> Path:
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_cache_written_and_reloaded(decoders: dict[str, Path], tmp_path: Path, modality: str) -> None:
    field = "audio" if modality == "audio" else "image"
    data = _write(tmp_path / "pairs.json", [{field: f"{i}.x", "caption": c} for i, c in enumerate(CAPTIONS)])
    out = cache_caption_embeddings(data, decoders[modality], modality, tmp_path / "cache", batch_size=2,
                                   shard_size=2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard-00000.safetensors",
                                                     "shard-00001.safetensors"]
    index = json.loads((out / "index.json").read_text())
    shape = [1, 16] if modality == "audio" else [77, 32]
    assert index["count"] == 3 and index["modality"] == modality and index["shape"] == shape
    assert index["truncated"] == (2 if modality == "audio" else 1)  # CLAP's tiny tokenizer stops at 20 tokens
    assert index["captions"][caption_key(CAPTIONS[2])] == "shard-00001.safetensors"
    assert index["text_encoder_config_sha256"] == cc.file_sha256(decoders[modality] / "text_encoder/config.json")
    cache = load_caption_embeddings(out)
    theirs = _own_prompt_embeds(modality, decoders[modality], CAPTIONS).reshape(3, *shape)
    assert len(cache) == 3 and CAPTIONS[0] in cache and "not cached" not in cache
    for i, caption in enumerate(CAPTIONS):
        assert (cache[caption] - theirs[i]).abs().max().item() <= 1e-6
    with pytest.raises(KeyError, match="caption not cached"):
        cache["a caption that was never cached"]


def test_dataset_formats(tmp_path: Path) -> None:
    webvid = _write(tmp_path / "webvid.json", [{"video": "v.mp4", "caption": "a"}, {"image": "i.jpg", "caption": "b"}])
    audiocaps = _write(tmp_path / "audiocaps.json", [{"audio": "a.wav", "caption": "dog barks"}])
    llava = _write(tmp_path / "llava.json", [{"image": "i.jpg", "conversations": [
        {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "first"},
        {"from": "human", "value": "Again."}, {"from": "gpt", "value": "a cat on a mat"}]}])
    assert read_captions(webvid) == ["a", "b"]
    assert read_captions(audiocaps) == ["dog barks"]
    assert read_captions(llava) == ["a cat on a mat"]


@pytest.mark.parametrize("record, message", [
    ({"image": "x.jpg"}, r"record 1: no 'caption' field"),
    ({"image": "x.jpg", "caption": 3}, r"record 1: field 'caption': expected a non-empty string"),
    ({"conversations": [{"from": "human", "value": "hi"}]}, r"record 1: field 'conversations': no 'gpt' turn"),
    ({"conversations": [{"from": "gpt"}]}, r"record 1: field 'conversations\[0\].value'"),
    ("just a string", r"record 1: expected an object"),
])
def test_bad_record_names_file_index_and_field(decoders: dict[str, Path], tmp_path: Path, record: object,
                                               message: str) -> None:
    data = _write(tmp_path / "bad.json", [{"caption": "fine"}, record])
    with pytest.raises(CaptionDataError, match=r"bad\.json: " + message):
        cache_caption_embeddings(data, decoders["image"], "image", tmp_path / "cache", progress=False)
    with pytest.raises(CaptionDataError, match=r"bad\.json: expected a JSON list"):
        read_captions(_write(tmp_path / "bad.json", {"caption": "x"}))


def test_resume_encodes_only_new_captions(decoders: dict[str, Path], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real = cc.encode_captions

    def counting(text_encoder, tokenizer, captions, device=None):
        seen.extend(captions)
        return real(text_encoder, tokenizer, captions, device)

    monkeypatch.setattr(cc, "encode_captions", counting)
    first = _write(tmp_path / "a.json", [{"caption": c} for c in CAPTIONS])
    out = cache_caption_embeddings(first, decoders["image"], "image", tmp_path / "cache", shard_size=2,
                                   progress=False)
    before = {p.name: p.read_bytes() for p in out.glob("shard-*")}
    assert seen == CAPTIONS
    seen.clear()
    more = ["a new caption", "another one"]
    second = _write(tmp_path / "b.json", [{"caption": c} for c in [CAPTIONS[1], *more, more[0], CAPTIONS[0]]])
    cache_caption_embeddings(second, decoders["image"], "image", out, shard_size=2, progress=False)
    assert seen == more  # cached and duplicate captions are skipped
    assert {p.name: p.read_bytes() for p in out.glob("shard-*") if p.name in before} == before
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 5 and index["shards"][-1] == "shard-00002.safetensors"
    assert len(load_caption_embeddings(out)) == 5

    def no_load(*args, **kwargs):
        raise AssertionError("nothing to encode: the text encoder must not be loaded")

    monkeypatch.setattr(cc, "load_text_encoder", no_load)
    cache_caption_embeddings(second, decoders["image"], "image", out, progress=False)
    with pytest.raises(ValueError, match="cache was made for modality 'image'"):
        cache_caption_embeddings(second, decoders["video"], "video", out, progress=False)


def test_folder_errors(decoders: dict[str, Path], tmp_path: Path) -> None:
    no_encoder = tmp_path / "sd"
    (no_encoder / "tokenizer").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"sd: no text_encoder/ folder; expected a local diffusers "
                                                r"pipeline folder of Stable Diffusion"):
        load_text_encoder(no_encoder, "image")
    with pytest.raises(FileNotFoundError, match="missing: decoder folder not found"):
        load_text_encoder(tmp_path / "missing", "video")
    with pytest.raises(ValueError, match=r"text_encoder is a 'clip_text_model' model, but modality 'audio'"):
        load_text_encoder(decoders["image"], "audio")
    with pytest.raises(ValueError, match=r"modality must be one of image\|video\|audio"):
        load_text_encoder(decoders["image"], "text")


def test_command(decoders: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from skillgpt.cli import build_parser

    parser = build_parser()
    data = _write(tmp_path / "pairs.json", [{"video": "v.mp4", "caption": c} for c in CAPTIONS])
    args = parser.parse_args(["cache-caption-embeddings", "--data", str(data), "--decoder", str(decoders["video"]),
                              "--modality", "video", "--out", str(tmp_path / "cache"), "--batch-size", "2"])
    args.func(args)
    printed = capsys.readouterr().out
    assert f"caption embeddings: {tmp_path / 'cache'} (3 captions, video, shape [77, 32])" in printed
    assert "note: 1 captions were longer than the tokenizer's maximum length" in printed
