"""Self-questioning end to end on the tiny preset: train with vicuna_v1_sq, then ask-before-answer."""
from __future__ import annotations

import json
from pathlib import Path

from skillgpt.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_self_questioning_trains_infers_and_evaluates(tiny_workspace, tmp_path, capsys) -> None:
    args = tiny_workspace.overrides(2, "sq", "train.init_from=null", "model.llm.template=vicuna_v1_sq",
                                    "train.max_steps=2")
    assert main(["train", str(REPO / "config" / "stage_2.yaml"), *args]) == 0
    ckpt = str(tiny_workspace.root / "sq" / "stage_2")
    clip = sorted((tiny_workspace.data / "videos" / "test").glob("*.mp4"))[0]
    capsys.readouterr()
    assert main(["infer", "--ckpt", ckpt, "--video", str(clip), "--self-questions", "2", "--max-new-tokens", "6",
                 "--json", "What is the proficiency level of this athlete?"]) == 0
    out = json.loads(capsys.readouterr().out)
    context = out["self_questions"]
    assert [t["from"] for t in context] == ["human", "gpt", "human", "gpt"]
    assert context[0]["value"].startswith("<video>") and "<video>" not in context[2]["value"]
    assert isinstance(out["answer"], str) and set(out["probabilities"]) == {
        "Novice", "Early Expert", "Intermediate Expert", "Late Expert"}

    assert main(["eval", "--ckpt", ckpt, "--split", "test", "--out", str(tmp_path / "e"), "--limit", "2",
                 "eval.self_questions=1", "eval.max_new_tokens=6"]) == 0
    records = json.loads((tmp_path / "e" / "results.json").read_text())["records"]
    assert len(records) == 2 and all(len(r["self_questions"]) == 2 for r in records)

    # a model trained without supervised questions cannot be asked to self-question
    plain = tiny_workspace.overrides(2, "sq_plain", "train.init_from=null", "model.llm.template=vicuna_v1",
                                     "train.max_steps=1")
    assert main(["train", str(REPO / "config" / "stage_2.yaml"), *plain]) == 0
    assert main(["infer", "--ckpt", str(tiny_workspace.root / "sq_plain" / "stage_2"), "--video", str(clip),
                 "--self-questions", "1", "Rate this."]) == 2
    assert "vicuna_v1_sq" in capsys.readouterr().err
