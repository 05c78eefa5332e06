"""`skillgpt eval` end to end on the tiny trained run: feedback metric, motion-free baseline, results
folder per data file and settings, provenance in results.json, printed locations."""
from __future__ import annotations

import json
from pathlib import Path

from skillgpt.eval.provenance import default_out_dir


def test_eval_scores_feedback_and_motion_free_into_a_folder_per_settings(trained_run, capsys) -> None:
    from skillgpt.eval.run import evaluate

    ckpt = trained_run.stage_2
    summary = evaluate(ckpt, split="test", limit=2, motion_free=True, overrides=["eval.max_new_tokens=3"])
    printed = capsys.readouterr().out
    assert summary["flaw_n"] == 2 and 0.0 <= summary["flaw_exact"] <= 1.0
    assert summary["lost_beats_mae"] is not None and set(summary["per_type"]) >= {"hesitation", "rush", "stumble"}
    assert summary["flaw_baseline"]["mix"] is not None and "data.train" in summary["flaw_baseline"]["source"]
    free = summary["motion_free"]
    assert free["n"] == 2 and free["top1"] is not None and free["flaw_exact"] is not None
    for scenario in summary["per_scenario"].values():
        assert "flaw_exact" in scenario and "bleu4" in scenario

    data = trained_run.workspace.data / "skill_test.json"
    settings = {"overrides": ["eval.max_new_tokens=3"], "limit": 2, "generate": True, "motion_free": True}
    outs = sorted(p for p in Path(ckpt).rglob("results.json") if p.parent.parent.name == "eval")
    assert len(outs) == 1 and outs[0].parent.name.startswith("test-skill_test-")
    assert outs[0].parent == default_out_dir(outs[0].parent.parent.parent, "test", data, settings)
    payload = json.loads(outs[0].read_text())
    run = payload["run"]
    assert run["data"] == str(data.resolve()) and run["split"] == "test" and run["settings"] == settings
    assert Path(run["checkpoint"]) == outs[0].parent.parent.parent.resolve()
    assert run["versions"]["torch"] and run["versions"]["python"] and run["started_utc"] and run["seconds"] >= 0
    assert run["eval_config"]["max_new_tokens"] == 3
    rec = payload["records"][0]
    assert {"feedback", "feedback_reference", "flaws_pred", "flaws_gold", "flaw_exact"} <= set(rec)
    assert len(payload["motion_free_records"]) == 2
    md = (outs[0].parent / "results.md").read_text()
    assert "flaw-exact" in md and "motion-free" in md and "precision" in md and "data:" in md
    assert str(outs[0].parent / "results.md") in printed and str(outs[0].parent / "confusion.png") in printed
    assert "flaw-exact" in printed and "motion-free" in printed

    # other settings: another folder; the first results stay
    evaluate(ckpt, split="test", limit=1, generate=False)
    outs2 = sorted(p for p in Path(ckpt).rglob("results.json") if p.parent.parent.name == "eval")
    assert len(outs2) == 2 and outs[0] in outs2
    quiet = json.loads([p for p in outs2 if p != outs[0]][0].read_text())["summary"]
    assert "flaw_n" not in quiet and "motion_free" not in quiet  # nothing generated: no feedback metric
