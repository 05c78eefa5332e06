"""`skillgpt infer --videos DIR|LIST.txt|DATA.json --out results.jsonl|.csv`: rate many clips with one model load.

`collect_clips` lists the clips (light: no torch), `rate_clips` yields one row per clip (a broken clip gives a
row with `error` and the run goes on), `write_rows` writes them as JSON lines or CSV, flushing every row so
an interrupted run keeps what it rated.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

if TYPE_CHECKING:  # torch / transformers come with the assistant
    from skillgpt.inference.assistant import SkillAssistant

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
FEEDBACK_QUESTION = "What should this athlete improve?"
OUT_SUFFIXES = (".jsonl", ".csv")


@dataclass(frozen=True)
class Clip:
    """One clip to rate: its path (a view dict for multi-view samples) and the sample id, if any."""

    path: Path | dict[str, Path]
    id: str = ""

    def shown(self) -> str:
        return json.dumps({k: str(v) for k, v in self.path.items()}) if isinstance(self.path, dict) else str(self.path)


def collect_clips(spec: str | Path) -> list[Clip]:
    """The clips of a folder (its video files, sorted), a text list (one path per line, relative to the
    list's folder; blank lines and `#` comments skipped) or a SkillGPT data JSON (each sample's `video`)."""
    src = Path(spec)
    if src.is_dir():
        clips = [Clip(p) for p in sorted(src.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES]
        if not clips:
            raise FileNotFoundError(f"--videos {src}: no video files ({', '.join(VIDEO_SUFFIXES)}) in this folder")
        return clips
    if not src.is_file():
        raise FileNotFoundError(f"--videos {src}: not found (expected a folder, a .txt list or a data .json)")
    if src.suffix.lower() == ".json":
        return _clips_of_json(src)
    lines = [ln.strip() for ln in src.read_text(encoding="utf-8").splitlines()]
    clips = [Clip(_relative(src, ln)) for ln in lines if ln and not ln.startswith("#")]
    if not clips:
        raise ValueError(f"--videos {src}: the list names no clips (expected one video path per line)")
    return clips


def _relative(anchor: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else anchor.parent / path


def _clips_of_json(src: Path) -> list[Clip]:
    try:
        samples = json.loads(src.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"--videos {src}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(samples, list):
        raise ValueError(f"--videos {src}: expected a JSON list of samples with a 'video' field")
    clips = []
    for i, rec in enumerate(samples):
        video = rec.get("video") if isinstance(rec, dict) else None
        if isinstance(video, str):
            path: Path | dict[str, Path] = _relative(src, video)
        elif isinstance(video, dict):
            path = {view: _relative(src, str(p)) for view, p in video.items()}
        else:
            raise ValueError(f"--videos {src}: sample {i} has no 'video' path (expected a string or view dict)")
        clips.append(Clip(path, str(rec.get("id", i))))
    return clips


def rate_clip(assistant: "SkillAssistant", clip: Clip, question: str | None, feedback_question: str | None,
              **gen: Any) -> dict[str, Any]:
    """One row: the predicted level and its probabilities, the answer to `question` and the feedback."""
    media = assistant.encode_media(assistant.load_video(clip.path))  # decoded and encoded once
    probs = assistant.rate(media)
    row: dict[str, Any] = {"label": max(probs, key=probs.get), "probabilities": probs}  # type: ignore[arg-type]
    files: list = []
    if assistant.media_modalities:  # media the answers ask for: <clip>-answer-image.png, ...
        name = clip.id or Path(next(iter(clip.path.values())) if isinstance(clip.path, dict) else clip.path).stem
        gen = {**gen, "files": files}
        row["answer"] = assistant.ask(question or assistant.cfg.eval.question, media, media_prefix=f"{name}-answer", **gen)
        row["feedback"] = (assistant.ask(feedback_question, media, media_prefix=f"{name}-feedback", **gen)
                           if feedback_question else None)
        row["media"] = [str(f.path) for f in files]
        return row
    row["answer"] = assistant.ask(question or assistant.cfg.eval.question, media, **gen)
    row["feedback"] = assistant.ask(feedback_question, media, **gen) if feedback_question else None
    return row


def rate_clips(assistant: "SkillAssistant", clips: list[Clip], question: str | None = None,
               feedback_question: str | None = FEEDBACK_QUESTION, progress: bool = True,
               **gen: Any) -> Iterator[dict[str, Any]]:
    """A row per clip in order; a clip that fails (unreadable file, ...) gives a row with `error` only."""
    from tqdm import tqdm

    bar = tqdm(clips, desc="rating", unit="clip", disable=not progress)
    for clip in bar:
        row: dict[str, Any] = {"path": clip.shown(), **({"id": clip.id} if clip.id else {})}
        try:
            row.update(rate_clip(assistant, clip, question, feedback_question, **gen), error=None)
        except (ValueError, OSError, RuntimeError) as err:  # MediaError / DataError are ValueErrors
            row.update(label=None, probabilities=None, answer=None, feedback=None, error=str(err).strip(),
                       **({"media": []} if assistant.media_modalities else {}))
        bar.set_postfix_str(row["label"] or "error")
        yield row


def write_rows(rows: Iterable[dict[str, Any]], out: str | Path, labels: list[str],
               media: bool = False) -> tuple[int, int]:
    """Write `rows` to `out` (.jsonl: one JSON object a line; .csv: path, id, label, one p(<level>) column
    per level, answer, feedback, error, and with `media` (a model with signal tokens) the generated files,
    separated by ";"); returns (rows written, rows with an error)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = failed = 0
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = None
        if out.suffix.lower() == ".csv":
            fields = ["path", "id", "label", *(f"p({lv})" for lv in labels), "answer", "feedback", "error"]
            fields += ["media"] if media else []
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
        for row in rows:
            if writer is None:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                probs = row.get("probabilities") or {}
                flat = {k: v for k, v in row.items() if k != "probabilities"}
                if "media" in flat:
                    flat["media"] = ";".join(flat["media"])
                writer.writerow({**flat, **{f"p({lv})": probs.get(lv, "") for lv in labels}})
            fh.flush()
            written += 1
            failed += row.get("error") is not None
    return written, failed


def check_out(out: str | None) -> Path:
    """`--out` of a batch run: a .jsonl or .csv file whose folder can be created."""
    if not out:
        raise ValueError("--videos needs --out FILE.jsonl or FILE.csv (one row per clip)")
    path = Path(out)
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise ValueError(f"--out {out}: expected a .jsonl or .csv file name")
    if path.is_dir():
        raise ValueError(f"--out {out}: is a folder (expected a .jsonl or .csv file name)")
    return path
