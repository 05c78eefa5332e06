"""Documented inference paths that used to crash: separate views (rate, eval, chat), image-only and
audio-only rating, the view_fusion projector with an image."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from skillgpt.data.prompt import place_placeholders
from skillgpt.inference.assistant import SkillAssistant
from skillgpt.inference.scoring import score_sequences
from skillgpt.models.build import build_model

SEPARATE = ["data.views=[ego,exo]", "data.view_mode=separate"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clips(trained_run) -> list[Path]:
    return sorted((trained_run.workspace.data / "videos" / "test").glob("*.mp4"))


def _view_split(ws, split: str, out: Path) -> Path:
    """The workspace's `split` as two-view samples (the same clip seen as `ego` and `exo`)."""
    samples = json.loads((ws.data / f"skill_{split}.json").read_text())
    for s in samples:
        s["video"] = {"ego": str(ws.data / s["video"]), "exo": str(ws.data / s["video"])}
    path = out / f"{split}_views.json"
    path.write_text(json.dumps(samples))
    return path


@pytest.fixture(scope="module")
def separate_run(tiny_workspace, tmp_path_factory) -> Path:
    """A stage-2 checkpoint trained with `data.view_mode: separate` (2 steps, no stage 1)."""
    from skillgpt.cli import main

    out = tmp_path_factory.mktemp("separate")
    data = {split: _view_split(tiny_workspace, split, out) for split in ("train", "test")}
    args = ["train", str(REPO / "config" / "stage_2.yaml"), *tiny_workspace.overrides(2, "separate"), *SEPARATE,
            f"data.train={data['train']}", "data.val=null", f"data.test={data['test']}", "train.init_from=null"]
    assert main(args) == 0
    return tiny_workspace.root / "separate" / "stage_2"


@pytest.fixture(scope="module")
def separate(separate_run) -> SkillAssistant:
    return SkillAssistant(separate_run, device="cpu")


def test_separate_views_rate_and_chat(separate, clips) -> None:
    from skillgpt.serve.chat import Conversation

    media = separate.load_video({"ego": str(clips[0]), "exo": str(clips[1])})
    assert [kind for kind, _ in media] == ["video", "video"]
    assert separate.with_placeholders(separate.cfg.eval.question, media).count("<video>") == 1
    probs = separate.rate(media)
    assert abs(sum(probs.values()) - 1) < 1e-5
    ids = separate.encode([{"from": "human", "value": separate.with_placeholders("Rate.", media)}], True)["input_ids"]
    assert sum(i == -200 for i in ids) == 2 * separate.placeholder_tokens["<video>"]
    conv = Conversation(media=separate.encode_media(media))
    answer = list(conv.stream(separate, "What should this athlete improve?", max_new_tokens=4))[-1]
    assert isinstance(answer, str) and conv.exchanges == [("What should this athlete improve?", answer)]


def test_separate_views_eval(separate_run, tmp_path) -> None:
    from skillgpt.eval.run import evaluate

    summary = evaluate(separate_run, split="test", out_dir=tmp_path, limit=2, generate=True,
                       overrides=["eval.max_new_tokens=3"])
    assert summary["n"] == 2


def test_image_only_rating_with_the_default_question(trained_run, tmp_path) -> None:
    assistant = SkillAssistant(trained_run.stage_2, device="cpu")
    Image.new("RGB", (40, 30), (200, 80, 20)).save(tmp_path / "still.png")
    media = assistant.load({"image": "still.png"}, tmp_path)
    assert "<video>" in assistant.cfg.eval.question
    assert assistant.with_placeholders(assistant.cfg.eval.question, media).startswith("<image>\nWhat")
    probs = assistant.rate(media)
    assert set(probs) == set(assistant.cfg.eval.labels)


def test_view_fusion_projector_takes_an_image(tiny_workspace) -> None:
    cfg = tiny_workspace.config(2, "fusion", "data.views=[ego,exo]", "model.projector.name=view_fusion",
                                "train.init_from=null")
    model, _ = build_model(cfg)
    v = cfg.data.video
    image = torch.randn(1, 1, 3, v.frames_per_clip, v.resolution, v.resolution)
    n = model.placeholder_tokens()["<image>"]
    ids = torch.tensor([[1, *([-201] * n), 5]])
    assert model.embed(ids, {"image": image}).shape[:2] == (1, n + 2)


def test_audio_only_scoring(tiny_workspace) -> None:
    """An audio-only sample rated with the default question: its <video> is dropped, <audio> put first."""
    cfg = tiny_workspace.config(2, "audio", "model.audio.enabled=true", "train.init_from=null",  # audio branch at
                                "model.encoder.audio_width=32", "model.encoder.audio_layers=2",  # a test width
                                "model.encoder.audio_heads=2")
    model, tokenizer = build_model(cfg)
    from skillgpt.data.templates import tokenize_conversation

    a = cfg.data.audio
    q = place_placeholders(cfg.eval.question, ["audio"], cfg.data)
    assert q.startswith("<audio>\n") and "<video>" not in q
    seqs = [tokenize_conversation([{"from": "human", "value": q}, {"from": "gpt", "value": label}], tokenizer,
                                  cfg.model.llm.template, model.placeholder_tokens(), 4096)
            for label in ("Novice", "Late Expert")]
    mels = torch.randn(a.num_clips, 1, a.num_mel_bins, a.target_length)
    scores = score_sequences(model.eval(), seqs, [("audio", mels)], torch.device("cpu"))
    assert scores.shape == (2,) and torch.isfinite(scores).all()
