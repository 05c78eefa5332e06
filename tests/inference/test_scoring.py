"""Label scoring from a shared KV prefix equals full-sequence scoring; eval encodes each sample once."""
from __future__ import annotations

import json

import pytest
import torch

from skillgpt.data.dataset import collate
from skillgpt.data.media import media_to
from skillgpt.inference.assistant import SkillAssistant
from skillgpt.models.skill_model import SkillGPT

LABELS = ["Novice", "Early Expert", "Intermediate Expert", "Late Expert"]


@pytest.fixture(scope="module")
def assistant(trained_run) -> SkillAssistant:
    return SkillAssistant(trained_run.stage_2, device="cpu")


@pytest.fixture(scope="module")
def clip(trained_run):
    return sorted((trained_run.workspace.data / "videos" / "test").glob("*.mp4"))[0]


def _full_sequence_scores(assistant: SkillAssistant, media, question: str, labels: list[str]) -> torch.Tensor:
    """The reference: every (prompt + label) sequence run whole, as scoring did before the KV prefix."""
    q = assistant.with_placeholders(question, media)
    items = []
    for label in labels:
        tok = assistant.encode([{"from": "human", "value": q}, {"from": "gpt", "value": label}], False)
        items.append({"id": label, "input_ids": tok["input_ids"], "labels": tok["labels"], "media": media})
    batch = collate(items, pad_id=assistant.tokenizer.pad_token_id)
    lp = assistant.model.sequence_logprobs(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                           media_to(batch["media"], "cpu"))
    n_tokens = (batch["labels"][:, 1:] != -100).sum(1)
    return lp.float(), n_tokens


def test_prefix_scores_equal_full_sequence_scores(assistant, clip) -> None:
    media = assistant.load_video(clip)
    question = "What is the proficiency level of this athlete?"
    want, n_tokens = _full_sequence_scores(assistant, media, question, LABELS)
    got = assistant.label_scores([media, media], question, LABELS)
    assert got.shape == (2, len(LABELS))
    torch.testing.assert_close(got[0], want, atol=1e-4, rtol=0)
    torch.testing.assert_close(got[1], want, atol=1e-4, rtol=0)
    assert len(set(n_tokens.tolist())) > 1  # labels of different lengths: padding after the prefix is exercised
    normalized = assistant.label_scores([media], question, LABELS, normalize=True)[0]
    torch.testing.assert_close(normalized, want / n_tokens, atol=1e-4, rtol=0)


def test_encoded_media_give_the_same_scores_and_reply(assistant, clip) -> None:
    media = assistant.load_video(clip)
    encoded = assistant.encode_media(media)
    assert all(isinstance(p, dict) for _, p in encoded)
    question = "What is the proficiency level of this athlete?"
    torch.testing.assert_close(assistant.label_scores([encoded], question, LABELS),
                               assistant.label_scores([media], question, LABELS), atol=1e-5, rtol=0)
    assert assistant.ask(question, encoded, max_new_tokens=6) == assistant.ask(question, media, max_new_tokens=6)


def test_eval_encodes_each_sample_once(trained_run, tmp_path, monkeypatch) -> None:
    from skillgpt.eval.run import evaluate

    encoded_rows: list[int] = []
    original = SkillGPT.encode

    def counting(self, kind, pixels):
        encoded_rows.append(pixels.shape[0])
        return original(self, kind, pixels)

    monkeypatch.setattr(SkillGPT, "encode", counting)
    test = json.loads((trained_run.workspace.data / "skill_test.json").read_text())
    n = 3
    summary = evaluate(trained_run.stage_2, split="test", out_dir=tmp_path, limit=n, generate=True,
                       overrides=["eval.max_new_tokens=4", "eval.batch_size=2"])
    assert summary["n"] == n and len(test) >= n
    train = json.loads((trained_run.workspace.data / "skill_train.json").read_text())
    assert "data.train" in summary["baseline"]["source"] and summary["baseline"]["n"] == len(train)
    assert len(LABELS) > 1
    assert sum(encoded_rows) == n  # one video per sample, encoded once for 4 labels and the generated answer
