"""Shared fixtures: a tiny workspace (synthetic videos + tiny LLM) built once per test session."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread per process (unless the caller sets OMP_NUM_THREADS): the tests' models are tiny, so on
# 2 cores thread hand-offs cost more than they gain (bench/RESULTS.md, "Test suite wall time"), and the training
# processes some tests start inherit it. Set before torch is imported; pytest_configure covers an earlier import.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@dataclass
class TinyWorkspace:
    root: Path
    data: Path
    llm: Path

    def overrides(self, stage: int, run: str, *extra: str) -> list[str]:
        """Overrides that point a stage config at this workspace (small, fast settings)."""
        data = [f"data.train={self.data}/captions_train.json"] if stage == 1 else [
            f"data.train={self.data}/skill_train.json", f"data.val={self.data}/skill_val.json",
            f"data.test={self.data}/skill_test.json",
        ]
        return [
            "preset=tiny", f"model.llm.path={self.llm}", *data,
            f"train.output_dir={self.root}/{run}/stage_{stage}",
            f"train.deepspeed_config={REPO}/dsconfig/stage_{stage}.json",
            "train.epochs=1", "train.micro_batch_size=4",
            *([f"train.init_from={self.root}/{run}/stage_1"] if stage == 2 else []),
            *extra,
        ]

    def config(self, stage: int, run: str, *extra: str):
        from skillgpt.config import load_config

        return load_config(REPO / "config" / f"stage_{stage}.yaml", self.overrides(stage, run, *extra))


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> TinyWorkspace:
    from skillgpt.cli import main

    root = tmp_path_factory.mktemp("tiny")
    data, llm = root / "data", root / "tiny-llm"
    assert main(["make-sample-data", "--out", str(data), "--per-level", "train=2,val=1,test=1"]) == 0
    assert main(["make-tiny-llm", "--data", str(data), "--out", str(llm), "--vocab-size", "512",
                 "--pretrain-steps", "5"]) == 0
    return TinyWorkspace(root, data, llm)


@dataclass
class TrainedRun:
    workspace: TinyWorkspace
    stage_1: Path
    stage_2: Path


@pytest.fixture(scope="session")
def trained_run(tiny_workspace: TinyWorkspace) -> TrainedRun:
    """Stage 1 then stage 2 of the tiny preset through the real CLI (a few optimizer steps each); stage 2
    also reports to an offline W&B run and validates after every step (tests/train/test_reporting.py)."""
    from skillgpt.cli import main

    watch = ["train.report_to=[tensorboard,wandb]", "train.eval_every=1"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_MODE", "offline")
        for stage in (1, 2):
            args = ["train", str(REPO / "config" / f"stage_{stage}.yaml"),
                    *tiny_workspace.overrides(stage, "e2e", *(watch if stage == 2 else []))]
            assert main(args) == 0
    run = tiny_workspace.root / "e2e"
    return TrainedRun(tiny_workspace, run / "stage_1", run / "stage_2")


# ---------------------------------------------------------------- tiny diffusion decoders (NExT-GPT's decoder side)
# Random Stable Diffusion, text-to-video and AudioLDM pipelines with tiny widths, saved with save_pretrained:
# conditioning [77, 32] (image), [77, 16] (video), [1, 16] (audio); 16 x 24 pixels run in well under a second.

DECODER_SAMPLE_RATE = 16000
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _write_bpe(folder: Path, vocab: dict[str, int], merges: list[str]) -> Path:
    """A byte-level BPE vocab.json + merges.txt pair, as the original tokenizers ship them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    return folder


def _clip_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in [*LETTERS, *(c + "</w>" for c in LETTERS), "th", "the</w>"]:
        vocab[token] = len(vocab)
    return CLIPTokenizer.from_pretrained(_write_bpe(folder, vocab, ["t h", "th e</w>"]), model_max_length=77)


def _roberta_tokenizer(folder: Path):
    from transformers import RobertaTokenizer

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    for token in ["\u0120", *LETTERS, "\u0120a"]:
        vocab[token] = len(vocab)
    return RobertaTokenizer.from_pretrained(_write_bpe(folder, vocab, ["\u0120 a"]), model_max_length=32)


def _scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def _vae(channels: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=channels, out_channels=channels, latent_channels=4,
                         block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4,
                         sample_size=16)


def _clip_text(width: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=64, hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))


def _unet_sizes(dims: str) -> dict:
    """A tiny cross-attention UNet's settings (2D: Stable Diffusion's, 3D: text-to-video's), two levels."""
    return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
                down_block_types=(f"CrossAttnDownBlock{dims}", f"DownBlock{dims}"),
                up_block_types=(f"UpBlock{dims}", f"CrossAttnUpBlock{dims}"), attention_head_dim=4, norm_num_groups=4)


def _image_pipeline(tmp: Path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(**_unet_sizes("2D"), cross_attention_dim=32)
    return StableDiffusionPipeline(vae=_vae(3), text_encoder=_clip_text(32), tokenizer=_clip_tokenizer(tmp), unet=unet,
                                   scheduler=_scheduler(), safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)


def _video_pipeline(tmp: Path):
    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel

    unet = UNet3DConditionModel(**_unet_sizes("3D"), cross_attention_dim=16)
    return TextToVideoSDPipeline(vae=_vae(3), text_encoder=_clip_text(16), tokenizer=_clip_tokenizer(tmp), unet=unet,
                                 scheduler=_scheduler())


def _audio_pipeline(tmp: Path):
    from diffusers import AudioLDMPipeline, UNet2DConditionModel
    from transformers import ClapTextConfig, ClapTextModelWithProjection, SpeechT5HifiGan, SpeechT5HifiGanConfig

    clap = ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=40, projection_dim=16, pad_token_id=1, bos_token_id=0, eos_token_id=2))
    # As AudioLDM: the CLAP embedding enters through the class embedding, not cross-attention.
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4, cross_attention_dim=16, class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=16, class_embeddings_concat=True)
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
        model_in_dim=8, sampling_rate=DECODER_SAMPLE_RATE, upsample_initial_channel=8, upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
        normalize_before=False))
    return AudioLDMPipeline(vae=_vae(1), text_encoder=clap, tokenizer=_roberta_tokenizer(tmp), unet=unet,
                            scheduler=_scheduler(), vocoder=vocoder)


BUILDERS = {"image": _image_pipeline, "video": _video_pipeline, "audio": _audio_pipeline}




@pytest.fixture(scope="session")
def tiny_decoders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One saved tiny pipeline folder per modality (image, video, audio)."""
    import torch

    root = tmp_path_factory.mktemp("decoders")
    out = {}
    for modality, build in BUILDERS.items():
        torch.manual_seed(0)
        out[modality] = root / modality
        build(root / f"{modality}-bpe").save_pretrained(out[modality])
    return out


# Signal tokens and output projectors sized for the tiny decoders: 2 signal tokens per modality.
GENERATION_SETTINGS = (
    "train.init_from=null", "model.generation.image_tokens=2", "model.generation.video_tokens=2",
    "model.generation.audio_tokens=2", "model.generation.image_shape=[77,32]", "model.generation.video_shape=[77,16]",
    "model.generation.audio_shape=[1,16]", "model.generation.hidden_dim=16", "model.generation.heads=2",
    "model.generation.encoder_layers=1", "model.generation.decoder_layers=1", "freeze.generation=full",
    "freeze.llm=frozen", "freeze.projector=full")


@pytest.fixture(scope="session")
def generation_checkpoint(tiny_workspace: TinyWorkspace) -> Path:
    """A complete checkpoint of the tiny preset with signal tokens and output projectors (random, untrained:
    what matters is the path from a reply's signal tokens to the decoders), written in-process."""
    import torch

    from skillgpt.checkpoint.delta import COMPLETE, save_trained_parts
    from skillgpt.checkpoint.manifest import write_manifest
    from skillgpt.models.build import build_model

    cfg = tiny_workspace.config(2, "generation-ckpt", *GENERATION_SETTINGS)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg)
    out = tiny_workspace.root / "generation-ckpt" / "stage_2" / "checkpoint-1"
    save_trained_parts(model, cfg, tokenizer, out)
    write_manifest(out)
    (out / COMPLETE).write_text("")
    return out


class ScriptedTokens:
    """A logits processor that picks the token of each scripted step (None: the model's own choice), so a
    test can make a real model's generation (KV cache, streaming, the signal-run rule) write given tokens."""

    def __init__(self, ids: list) -> None:
        self.ids = ids

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1]
        if step < len(self.ids) and self.ids[step] is not None:
            scores = scores.clone()
            scores[:] = -float("inf")
            scores[:, self.ids[step]] = 0.0
        return scores


@pytest.fixture()
def scripted_replies(monkeypatch: pytest.MonkeyPatch):
    """`script(["Here", "[IMG0]", None, ..., "</s>"])`: for the rest of this test, every SkillAssistant reply
    starts with these tokens (a word: its first token; "</s>": end of text; None: the model's own choice,
    e.g. the rest of a signal run, which generation completes by itself); `script(None)`: the model's own
    replies again."""
    from transformers import LogitsProcessorList

    from skillgpt.inference.assistant import SkillAssistant

    original = SkillAssistant._prompt
    state: dict = {"tokens": None}

    def token_id(tokenizer, token):
        if token is None or token == "</s>":
            return None if token is None else tokenizer.eos_token_id
        return tokenizer.convert_tokens_to_ids(token) if token.startswith("[") else \
            tokenizer(token, add_special_tokens=False).input_ids[0]

    def _prompt(self, *args, **kwargs):
        ids, media, gen = original(self, *args, **kwargs)
        if state["tokens"] is not None:
            script = ScriptedTokens([token_id(self.tokenizer, t) for t in state["tokens"]])
            gen["logits_processor"] = LogitsProcessorList([script, *(gen.get("logits_processor") or [])])
        return ids, media, gen

    monkeypatch.setattr(SkillAssistant, "_prompt", _prompt)

    def script(tokens) -> None:
        state["tokens"] = tokens

    return script


# The tiny NExT-GPT recipe at test size: the tiny Stable Diffusion pipeline of `tiny_decoders` (32-wide CLIP text
# encoder) and a projector to match.
NEXTGPT_TINY = ["model.generation.image_shape=[77,32]", "model.generation.hidden_dim=16", "model.generation.heads=2",
                "model.generation.encoder_layers=1", "model.generation.decoder_layers=1"]


@dataclass
class NextGPTRun:
    workspace: TinyWorkspace
    root: Path
    data: Path  # tx_<split>.json, instruct_<split>.json (skillgpt.generation.recipe_data)
    cache: Path  # data.caption_cache.image: every caption of those files
    stage_1: Path
    stage_2: Path

    def overrides(self, stage: int, *extra: str) -> list[str]:
        """Overrides that point config/nextgpt/stage_<stage>.yaml at this run (test sizes)."""
        data = {1: [f"data.train={self.workspace.data}/captions_train.json", "data.val=null"],
                2: [f"data.train={self.data}/tx_train.json", f"data.test={self.data}/tx_test.json"],
                3: [f"data.train={self.data}/instruct_train.json", f"data.test={self.data}/instruct_test.json"]}[stage]
        return [f"model.llm.path={self.workspace.llm}", *NEXTGPT_TINY, *data, "train.eval_every=0",
                "train.report_to=[]", "train.save_every=100000",  # one checkpoint, at the end
                *([] if stage == 1 else ["data.val=null", f"data.caption_cache.image={self.cache}",
                                         f"train.init_from={self.root}/stage_{stage - 1}"]),
                f"train.output_dir={self.root}/stage_{stage}",
                f"train.deepspeed_config={REPO}/dsconfig/nextgpt/stage_{stage}.json", *extra]


@pytest.fixture(scope="session")
def nextgpt_run(tiny_workspace: TinyWorkspace, tiny_decoders: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> NextGPTRun:
    """Stages 1 and 2 of the tiny NExT-GPT recipe (config/nextgpt/) through the real CLI: the recipe's data from
    the synthetic set, its captions cached with the tiny Stable Diffusion pipeline's text encoder, stage 1 for one step, stage 2
    (signal rows + output projector, alignment loss) for 4 steps (epochs) over the 8 training captions."""
    import json

    pytest.importorskip("diffusers")
    from skillgpt.cli import main
    from skillgpt.generation.recipe_data import write_recipe_data

    root = tmp_path_factory.mktemp("nextgpt")
    data = root / "data"
    write_recipe_data(tiny_workspace.data, out=data)
    every = [s for split in ("train", "val", "test") for s in json.loads((data / f"tx_{split}.json").read_text())]
    (data / "tx_all.json").write_text(json.dumps(every))
    cache = root / "captions"
    assert main(["cache-caption-embeddings", "--data", str(data / "tx_all.json"), "--decoder",
                 str(tiny_decoders["image"]), "--modality", "image", "--out", str(cache)]) == 0
    run = NextGPTRun(tiny_workspace, root, data, cache, root / "stage_1", root / "stage_2")
    assert main(["train", str(REPO / "config" / "nextgpt" / "stage_1.yaml"),
                 *run.overrides(1, "train.max_steps=1", "train.micro_batch_size=2")]) == 0
    assert main(["train", str(REPO / "config" / "nextgpt" / "stage_2.yaml"),
                 *run.overrides(2, "train.epochs=4", "train.micro_batch_size=8", "train.lr=1e-2")]) == 0
    return run
