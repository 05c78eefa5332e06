"""The whole path on the tiny preset: stage 1 -> stage 2 -> eval -> infer, through the CLI."""
from __future__ import annotations

import json

import yaml

from skillgpt.checkpoint.delta import list_checkpoints
from skillgpt.cli import main


def test_stage_outputs_hold_only_what_was_trained(trained_run) -> None:
    s1, s2 = list_checkpoints(trained_run.stage_1)[-1], list_checkpoints(trained_run.stage_2)[-1]
    # tiny stage 1 trains projector + whole LLM; stage 2 projector + LoRA (a PEFT adapter folder)
    assert (s1 / "projector.safetensors").is_file() and (s1 / "llm" / "config.json").is_file()
    assert not (s1 / "adapter").exists()
    assert (s2 / "projector.safetensors").is_file() and not (s2 / "llm").exists()
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (s2 / "adapter").iterdir()}
    for ckpt in (s1, s2):
        assert (ckpt / "COMPLETE").is_file() and (ckpt / "trainer_state.json").is_file()
        resolved = yaml.safe_load((ckpt / "config.yaml").read_text())
        assert resolved["preset"] == "tiny" and resolved["stage"] in (1, 2)
    assert (trained_run.stage_2 / "config.yaml").is_file()
    lines = (trained_run.stage_2 / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(ln)["step"] for ln in lines]
    assert steps == list(range(1, len(steps) + 1)) and all("loss" in json.loads(ln) for ln in lines)


def test_eval_writes_results_table_and_confusion(trained_run, tmp_path, capsys) -> None:
    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(trained_run.stage_2), "--split", "test", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "top-1" in printed and "majority" in printed and "confusion" in printed
    results = json.loads((out / "results.json").read_text())
    summary = results["summary"]
    assert summary["n"] == 4 and 0.0 <= summary["top1"] <= 1.0
    assert set(summary["per_scenario"]) <= {"basketball_dribble", "gymnastics_swing"}
    assert sum(g["n"] for g in summary["per_scenario"].values()) == 4
    assert sum(map(sum, summary["confusion"])) == 4
    assert (out / "confusion.png").stat().st_size > 0 and (out / "confusion.txt").is_file()
    assert len(results["records"]) == 4 and all("generated" in r for r in results["records"])


def test_infer_answers_a_question_about_a_video(trained_run, capsys) -> None:
    clip = sorted((trained_run.workspace.data / "videos" / "test").glob("*.mp4"))[0]
    args = ["infer", "--ckpt", str(trained_run.stage_2), "--video", str(clip), "--max-new-tokens", "8",
            "What is the proficiency level of this athlete?"]
    assert main(args) == 0
    greedy = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == greedy  # greedy decoding is deterministic
    assert main([*args, "--temperature", "0.8", "--top-p", "0.9"]) == 0


def test_infer_json_gives_label_probabilities_and_answer(trained_run, capsys) -> None:
    clip = sorted((trained_run.workspace.data / "videos" / "test").glob("*.mp4"))[0]
    assert main(["infer", "--ckpt", str(trained_run.stage_2), "--video", str(clip), "--max-new-tokens", "8",
                 "--json", "How skilled is this athlete?"]) == 0
    out = json.loads(capsys.readouterr().out)
    probs = out["probabilities"]
    assert set(probs) == {"Novice", "Early Expert", "Intermediate Expert", "Late Expert"}
    assert abs(sum(probs.values()) - 1.0) < 1e-4 and out["label"] == max(probs, key=probs.get)
    assert isinstance(out["answer"], str) and out["question"] == "How skilled is this athlete?"


def test_eval_scores_each_view_and_late_fuses(trained_run, tmp_path, capsys) -> None:
    from skillgpt.data.synthetic import make_sample_data

    data = tmp_path / "mv"
    make_sample_data(data, seed=5, per_level={"test": 1}, views=["ego", "exo1", "exo2"], progress=False)
    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(trained_run.stage_2), "--split", "test", "--out", str(out), "--no-generate",
                 f"data.test={data}/skill_test_views.json", "eval.views=[ego,exo1,exo2]",
                 "eval.view_groups.Exo=[exo1,exo2]", "eval.view_groups.EgoExo=[ego,exo1,exo2]"]) == 0
    printed = capsys.readouterr().out
    for row in ("ego", "exo1", "exo2", "Exo (fused)", "EgoExo (fused)", "majority"):
        assert row in printed
    results = json.loads((out / "results.json").read_text())
    view_top1 = results["summary"]["view_top1"]
    assert set(view_top1["views"]) == {"ego", "exo1", "exo2"} and set(view_top1["fused"]) == {"Exo", "EgoExo"}
    for rec in results["records"]:
        probs = rec["view_probs"]
        exo = [(a + b) / 2 for a, b in zip(probs["exo1"], probs["exo2"])]
        assert rec["fused_probs"]["Exo"] == __import__("pytest").approx(exo)
        assert rec["pred"] == rec["fused_preds"]["Exo"]  # the first group is the reported prediction
    assert results["summary"]["top1"] == view_top1["fused"]["Exo"]
    assert (out / "confusion.png").stat().st_size > 0


def test_eval_multiple_choice_score_and_feedback_tasks(trained_run, tmp_path, capsys) -> None:
    from skillgpt.config.schema import PROFICIENCY_LEVELS

    data = trained_run.workspace.data
    samples = json.loads((data / "skill_test.json").read_text())
    mc = [{"id": s["id"], "video": str(data / s["video"]), "candidates": PROFICIENCY_LEVELS, "answer": s["label"],
           "conversations": [{"from": "human", "value": "<video>\nWhich level is this?"}]} for s in samples]
    aqa = [{"id": s["id"], "video": str(data / s["video"]), "score": float(i),
            "conversations": [{"from": "human", "value": "<video>\nWhat score does this get?"}]}
           for i, s in enumerate(samples)]
    for name, rows in (("mc", mc), ("aqa", aqa)):
        (tmp_path / f"{name}.json").write_text(json.dumps(rows))
    ckpt = str(trained_run.stage_2)
    for task, file, key in (("multiple_choice", tmp_path / "mc.json", "accuracy"),
                            ("score", tmp_path / "aqa.json", "spearman_rho"),
                            ("feedback", data / "skill_test.json", "bleu4")):
        out = tmp_path / task
        assert main(["eval", "--ckpt", ckpt, "--split", "test", "--out", str(out), f"data.test={file}",
                     f"eval.task={task}", "eval.max_new_tokens=6"]) == 0
        assert f"task: {task}" in capsys.readouterr().out
        summary = json.loads((out / "results.json").read_text())["summary"]
        assert summary["task"] == task and key in summary and (out / "results.md").is_file()
        if task == "multiple_choice":
            assert summary["n"] == 4 and 0.0 <= summary["accuracy"] <= 1.0
