"""Training you can watch: TensorBoard events, a W&B offline run, loss.png and validation top-1 during
training (train.report_to, train.eval_every; skillgpt.train.reporting / validation)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from skillgpt.config.loader import ConfigError
from skillgpt.train.reporting import Reporter, make_reporter, plot_curves, read_metrics

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def _scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tiny_run_reports_to_tensorboard_and_wandb_with_validation_top1(trained_run) -> None:
    """The shared tiny run (conftest: stage 2 with report_to [tensorboard, wandb], eval_every 1)."""
    run = trained_run.stage_2
    records = read_metrics(run / "metrics.jsonl")
    assert len(records) >= 2
    for r in records:  # validated after every step
        assert 0.0 <= r["val_top1"] <= 1.0 and r["val_n"] == 4 and r["val_loss"] > 0 and r["samples_per_s"] > 0
    scalars = _scalars(run / "tensorboard")
    assert scalars["train/loss"] == pytest.approx({r["step"]: r["loss"] for r in records}, rel=1e-6)
    assert set(scalars["train/lr"]) == set(scalars["train/samples_per_s"]) == {r["step"] for r in records}
    assert scalars["val/top1"] == pytest.approx({r["step"]: r["val_top1"] for r in records})
    assert scalars["val/loss"] == pytest.approx({r["step"]: r["val_loss"] for r in records})
    wandb_runs = list((run / "wandb").glob("offline-run-*/run-*.wandb"))  # offline: nothing sent anywhere
    assert len(wandb_runs) == 1
    data = wandb_runs[0].read_bytes()
    assert all(name in data for name in (b"train/loss", b"train/lr", b"train/samples_per_s", b"val/top1", b"val/loss"))
    # the checkpoint of the last step records that step's validation
    last = records[-1]
    ckpt = run / f"checkpoint-{last['step']}"
    assert json.loads((ckpt / "metrics.json").read_text())["val_top1"] == last["val_top1"]
    assert (run / "loss.png").read_bytes().startswith(PNG)
    # stage 1 (defaults: report_to [tensorboard], eval_every 0): events and loss.png, no validation, no W&B
    assert (trained_run.stage_1 / "loss.png").read_bytes().startswith(PNG)
    assert "train/loss" in _scalars(trained_run.stage_1 / "tensorboard")
    assert not (trained_run.stage_1 / "wandb").exists()
    assert all("val_loss" not in r for r in read_metrics(trained_run.stage_1 / "metrics.jsonl"))


def test_validation_top1_is_what_eval_reports(trained_run, tmp_path) -> None:
    """The same scorer as `skillgpt eval`: the last step's val top-1 / p(gold) are eval's on the val split."""
    from skillgpt.eval.run import evaluate

    last = read_metrics(trained_run.stage_2 / "metrics.jsonl")[-1]
    summary = evaluate(trained_run.stage_2, split="val", out_dir=tmp_path / "eval", generate=False)
    assert summary["n"] == last["val_n"]
    assert summary["top1"] == last["val_top1"]
    assert summary["mean_gold_prob"] == pytest.approx(last["val_gold_prob"], abs=1e-5)


def test_no_report_backends_import_nothing(tmp_path, monkeypatch) -> None:
    """report_to: [] logs nothing extra and never imports tensorboard or wandb."""
    from skillgpt.config.schema import Config

    for name in ("wandb", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it would raise
    cfg = Config()
    cfg.train.report_to = []
    reporter = make_reporter(cfg, tmp_path, 0)
    reporter.log({"step": 1, "loss": 1.0})
    reporter.close()
    assert list(tmp_path.iterdir()) == []
    cfg.train.report_to = ["tensorboard"]
    with pytest.raises(ImportError, match="train.report_to: tensorboard needs the tensorboard package"):
        make_reporter(cfg, tmp_path, 0)


class _Broken:
    def log(self, scalars, step):
        raise OSError("disk full")

    def flush(self):
        pass

    def close(self):
        pass


def test_a_failing_backend_is_switched_off_not_fatal(tmp_path, capsys) -> None:
    reporter = Reporter(tmp_path, {"broken": _Broken()})
    reporter.log({"step": 1, "loss": 2.0})
    reporter.log({"step": 2, "loss": 1.0})
    assert capsys.readouterr().err.count("broken failed (OSError: disk full)") == 1
    assert reporter.backends == {}


def test_loss_plot_skips_nonfinite_and_missing_values(tmp_path) -> None:
    records = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": float("nan"), "skipped": "nonfinite_loss"},
               {"step": 3, "loss": 1.5, "val_loss": 1.7, "val_top1": 0.5}]
    out = plot_curves(records, tmp_path / "loss.png")
    assert out.read_bytes().startswith(PNG) and not list(tmp_path.glob("*.tmp.png"))


@pytest.mark.parametrize("value, message", [
    ("[tensorbord]", "train.report_to: unknown 'tensorbord'"),
    ("[wandb,wandb]", "train.report_to: an item given twice"),
])
def test_report_to_is_checked_at_config_load(tiny_workspace, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        tiny_workspace.config(2, "cfg", f"train.report_to={value}")


def test_eval_every_must_not_be_negative(tiny_workspace) -> None:
    with pytest.raises(ConfigError, match="train.eval_every: must be >= 0"):
        tiny_workspace.config(2, "cfg", "train.eval_every=-1")


def test_resuming_with_other_reporting_settings_is_allowed(trained_run) -> None:
    """Where and how often a run reports does not change its weights: resume accepts a new report_to and
    eval_every, and still refuses a changed learning rate."""
    from skillgpt.checkpoint.delta import list_checkpoints
    from skillgpt.checkpoint.lineage import record_lineage
    from skillgpt.checkpoint.resume import check_resume

    previous = list_checkpoints(trained_run.stage_2)[-1]
    ws = trained_run.workspace
    watch = ("train.report_to=[tensorboard,wandb]", "train.eval_every=1")

    def config(*extra: str):
        return record_lineage(ws.config(2, "e2e", *extra), trained_run.stage_2)

    check_resume(previous, config("train.report_to=[]", "train.eval_every=7"), world=1, rank=0)
    with pytest.raises(ValueError, match=r"train\.lr"):
        check_resume(previous, config(*watch, "train.lr=0.5"), world=1, rank=0)
