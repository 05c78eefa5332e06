"""Training reports beside metrics.jsonl: TensorBoard / Weights & Biases scalars (`train.report_to`) and
`loss.png` (train and validation curves, redrawn from metrics.jsonl at every save).

Only rank 0 reports (the other ranks hold a `SilentReporter`). tensorboard,
wandb and matplotlib are imported only when used. Monitoring never stops training: a backend that fails
while logging is reported once on stderr and switched off (the other ranks would otherwise wait at the
next collective for a rank that died writing a plot).
"""
from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from skillgpt.config import Config

# metrics.jsonl key -> scalar name in TensorBoard / W&B
SCALARS = {
    "loss": "train/loss", "lr": "train/lr", "samples_per_s": "train/samples_per_s", "seconds": "train/seconds_per_step",
    "val_loss": "val/loss", "val_top1": "val/top1", "val_gold_prob": "val/gold_prob",
}
PLOT_NAME = "loss.png"


def warn(message: str) -> None:
    print(f"[skillgpt] warning: {message}", file=sys.stderr)


class Backend(Protocol):
    def log(self, scalars: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


class TensorBoard:
    """Event files in <run>/tensorboard (`tensorboard --logdir <run>`). On resume, events past the step
    resumed from are purged (they belong to the interrupted run)."""

    def __init__(self, cfg: Config, run_dir: Path, start_step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError("train.report_to: tensorboard needs the tensorboard package "
                              "(pinned in requirements.txt: pip install -r requirements.txt)") from err
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None, flush_secs=30)

    def log(self, scalars: dict[str, float], step: int) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB:
    """A Weights & Biases run in <run>/wandb, offline unless WANDB_MODE says otherwise (sync later with
    `wandb sync <run>/wandb/offline-run-*`). Each start (and resume) is a new W&B run, grouped by the run
    folder; the project is WANDB_PROJECT or `run_name`."""

    def __init__(self, cfg: Config, run_dir: Path, start_step: int) -> None:
        try:
            import wandb
        except ImportError as err:
            raise ImportError("train.report_to: wandb needs the wandb package "
                              "(pinned in requirements.txt: pip install -r requirements.txt)") from err
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", cfg.run_name), dir=str(run_dir),
            group=str(run_dir.resolve()), job_type=f"stage_{cfg.stage}", name=f"{run_dir.name}@{start_step}",
            mode=os.environ.get("WANDB_MODE", "offline"), config=asdict(cfg), reinit="create_new",
            settings=wandb.Settings(console="off", quiet=True),  # no stdout/stderr capture, fewer lines
        )

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.run.finish()


BACKENDS: dict[str, Callable[[Config, Path, int], Backend]] = {"tensorboard": TensorBoard, "wandb": WandB}


def scalars_of(record: dict[str, Any]) -> dict[str, float]:
    """The finite numeric values of a metrics.jsonl record, under their report names."""
    out = {}
    for key, name in SCALARS.items():
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (none when it does not exist)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_curves(records: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Train loss (and validation loss, top-1 on a second axis) against the optimizer step, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    def series(key: str) -> tuple[list[int], list[float]]:
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        return [s for s, _ in pts], [v for _, v in pts]

    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(*series("loss"), label="train loss", color="tab:blue", linewidth=1)
    steps, values = series("val_loss")
    if steps:
        ax.plot(steps, values, "o-", label="val loss", color="tab:orange")
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    steps, values = series("val_top1")
    if steps:
        top = ax.twinx()
        top.plot(steps, [100 * v for v in values], "s--", label="val top-1 (%)", color="tab:green")
        top.set_ylabel("val top-1 (%)")
        top.set_ylim(0, 100)
        more, more_names = top.get_legend_handles_labels()
        handles, names = handles + more, names + more_names
    ax.legend(handles, names, loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp)
    os.replace(tmp, out)
    return out


class Reporter:
    """Rank 0's reports: `log` each metrics.jsonl record to the backends, `plot` loss.png."""

    def __init__(self, run_dir: Path, backends: dict[str, Backend], title: str = "") -> None:
        self.run_dir, self.backends, self.title = run_dir, backends, title

    def _guard(self, name: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as err:  # monitoring must not stop (or desynchronise) training
            warn(f"{name} failed ({type(err).__name__}: {err}); it is switched off for the rest of this run")
            self.backends.pop(name, None)

    def log(self, record: dict[str, Any]) -> None:
        scalars = scalars_of(record)
        for name, backend in list(self.backends.items()):
            self._guard(name, lambda: backend.log(scalars, int(record["step"])))

    def plot(self) -> Optional[Path]:
        """loss.png from metrics.jsonl (the whole run, across resumes); backends are flushed too."""
        for name, backend in list(self.backends.items()):
            self._guard(name, backend.flush)
        try:
            return plot_curves(read_metrics(self.run_dir / "metrics.jsonl"), self.run_dir / PLOT_NAME, self.title)
        except Exception as err:
            warn(f"writing {self.run_dir / PLOT_NAME} failed ({type(err).__name__}: {err})")
            return None

    def close(self) -> None:
        for name, backend in list(self.backends.items()):
            self._guard(name, backend.close)
        self.backends = {}


class SilentReporter(Reporter):
    """What ranks other than 0 get: reports nothing."""

    def __init__(self) -> None:
        super().__init__(Path("."), {})

    def log(self, record: dict[str, Any]) -> None:
        pass

    def plot(self) -> Optional[Path]:
        return None


def make_reporter(cfg: Config, run_dir: Path, start_step: int) -> Reporter:
    """Rank 0's reporter with train.report_to's backends (other ranks take a `SilentReporter`). Call it
    through `distributed.run_on_rank0`, so that a failing start (a missing package) stops every rank."""
    backends: dict[str, Backend] = {}
    try:
        for name in cfg.train.report_to:
            if name not in BACKENDS:
                raise ValueError(f"train.report_to: unknown backend {name!r}; expected some of {', '.join(BACKENDS)}")
            backends[name] = BACKENDS[name](cfg, run_dir, start_step)
    except BaseException:
        for backend in backends.values():
            backend.close()
        raise
    return Reporter(run_dir, backends, title=f"{cfg.run_name} stage {cfg.stage} ({run_dir.name})")
