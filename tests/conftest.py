"""Shared fixtures: a tiny workspace (synthetic videos + tiny LLM) built once per test session."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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


def make_standin_decoder(folder: Path, width: int = 16) -> Path:
    """A decoder folder as the caption cache reads it (text_encoder/: a tiny random CLIP text model of `width`,
    tokenizer/: CLIP BPE over single letters), standing in for Stable Diffusion's; returns folder/decoder."""
    import json
    import string

    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    src = folder / "src"
    src.mkdir(parents=True)
    pieces = ["<|startoftext|>", "<|endoftext|>", *string.ascii_lowercase, *(c + "</w>" for c in string.ascii_lowercase)]
    (src / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(pieces)}))
    (src / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab=str(src / "vocab.json"), merges=str(src / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                                           num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                           bos_token_id=0, eos_token_id=1, pad_token_id=1))
    encoder.save_pretrained(folder / "decoder" / "text_encoder")
    tokenizer.save_pretrained(folder / "decoder" / "tokenizer")
    return folder / "decoder"


# The tiny NExT-GPT recipe at test size: a 16-wide stand-in decoder text encoder and a projector to match.
NEXTGPT_TINY = ["model.generation.image_shape=[77,16]", "model.generation.hidden_dim=16", "model.generation.heads=2"]


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
def nextgpt_run(tiny_workspace: TinyWorkspace, tmp_path_factory: pytest.TempPathFactory) -> NextGPTRun:
    """Stages 1 and 2 of the tiny NExT-GPT recipe (config/nextgpt/) through the real CLI: the recipe's data from
    the synthetic set, its captions cached with a stand-in decoder text encoder, stage 1 for one step, stage 2
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
                 str(make_standin_decoder(root)), "--modality", "image", "--out", str(cache)]) == 0
    run = NextGPTRun(tiny_workspace, root, data, cache, root / "stage_1", root / "stage_2")
    assert main(["train", str(REPO / "config" / "nextgpt" / "stage_1.yaml"),
                 *run.overrides(1, "train.max_steps=1", "train.micro_batch_size=2")]) == 0
    assert main(["train", str(REPO / "config" / "nextgpt" / "stage_2.yaml"),
                 *run.overrides(2, "train.epochs=4", "train.micro_batch_size=8", "train.lr=1e-2")]) == 0
    return run
