"""Per-sample data checks: the one place that decides whether a sample is well formed.

Used by training (``SkillDataset``, which refuses bad samples) and by ``skillgpt data validate`` and the
converters (which list every problem). ``check_sample`` looks at one record without a tokenizer or
decoding and returns every problem it finds, each a :class:`Problem` naming file, sample id and field:

- ``Checked.errors``: the sample cannot be trained on: the text field the format needs ('caption' or
  'conversations') missing or malformed, an assistant turn that is empty or holds a placeholder, a bad
  media field (views included), a video segment (``start``/``end``) that is not ``0 <= start < end``
  seconds, placeholder counts unlike the media items, a ``label`` outside the allowed labels. Training
  refuses the sample; validate reports an error.
- ``Checked.metadata``: fields that only evaluation and the reports read (``id``, ``label`` and
  ``scenario`` types, a numeric ``score``, ``candidates``/``answer`` that match). Validate reports an
  error; training reads none of them, so it does not refuse the sample for them.

``missing_media`` (files exist) and ``tokenize_sample`` (the length rule: text + visual tokens against
``model.llm.max_length``) are shared too; ``eval_task_problems`` checks the fields ``eval.task`` needs.
The data pipeline (torch, transformers) is imported inside the functions, so a validate run answered
from its cache never loads it.
"""
from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from skillgpt.config.schema import DataConfig

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from skillgpt.data.media import MediaItem
    from skillgpt.data.templates import ConversationTemplate

__all__ = ["Checked", "Problem", "check_sample", "eval_task_problems", "missing_media", "structure_problems",
           "text_field", "to_conversation", "tokenize_sample"]

Found = list[tuple[str, str]]  # (field, message) pairs, before they are tied to a file and sample


@dataclass
class Problem:
    file: str
    sample: str  # sample id ("#i" without one; "-" for the whole file)
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.sample == "-" else f"{self.file}: sample {self.sample}"
        return f"{where}: field '{self.field}': {self.message}" if self.field != "-" else f"{where}: {self.message}"


@dataclass
class Checked:
    """One sample after the checks that need no tokenizer or decoding."""

    sid: str
    errors: list[Problem]  # the sample cannot be trained on
    metadata: list[Problem]  # bad fields that only evaluation and the reports read
    media: list[tuple[str, "MediaItem"]]  # (field, item) in placeholder order, well-formed fields only
    turns: Optional[list[dict[str, str]]]  # the conversation, views expanded; None when it has errors

    @property
    def refs(self) -> list[tuple[str, str, Path]]:
        """(field, kind, file) per media file; a fused multi-view item has one per view."""
        return [(fld + (f".{view}" if view else ""), it.kind, p)
                for fld, it in self.media for view, p in zip(it.views, it.paths)]


def text_field(fmt: str) -> str:
    """The field that holds a sample's text under `data.format`."""
    return "caption" if fmt == "caption" else "conversations"


def to_conversation(sample: dict[str, Any], fmt: str, prompts: list[str], index: int) -> list[dict[str, str]]:
    """The sample's turns; caption pairs become one fixed-prompt question and the caption as answer."""
    if fmt == "caption":
        return [{"from": "human", "value": prompts[index % len(prompts)]}, {"from": "gpt", "value": sample["caption"]}]
    return sample["conversations"]


def _media(rec: dict[str, Any], data_cfg: DataConfig, root: Path,
           where: str) -> tuple[list[tuple[str, "MediaItem"]], Found]:
    """(field, item) per media item as ``sample_media`` builds them, one list entry at a time so that
    every bad entry is named."""
    from skillgpt.data.media import DataError, read_segment, sample_media

    media: list[tuple[str, MediaItem]] = []
    found: Found = []
    segment: dict[str, Any] = {}  # start/end passed on with each entry once they are valid
    try:
        segment = {k: rec[k] for k in ("start", "end")} if read_segment(rec, where) else {}
    except DataError as err:
        message = str(err).removeprefix(where + ": ")
        field = "start" if message.startswith("field 'start'") else "end"
        found.append((field, message.removeprefix(f"field '{field}' ")))
    for kind in ("video", "image", "audio"):
        value = rec.get(kind)
        if not value:  # as sample_media: an absent or empty field has no media
            continue
        entries = [(f"{kind}[{j}]", [v]) for j, v in enumerate(value)] if isinstance(value, list) else [(kind, value)]
        for fld, v in entries:
            try:
                media += [(fld, it) for it in sample_media({kind: v, **segment}, root, data_cfg, where)]
            except DataError as err:
                found.append((fld, str(err).removeprefix(where + ": ").removeprefix(f"field '{kind}' ")))
    return media, found


def _turns(rec: dict[str, Any], index: int, data_cfg: DataConfig,
           n_media: Optional[Counter[str]]) -> tuple[Optional[list[dict[str, str]]], Found]:
    """The conversation and its problems; placeholder counts are compared only with `n_media` given."""
    from skillgpt.data.media import PLACEHOLDER_OF
    from skillgpt.data.prompt import expand_view_placeholders, place_placeholders
    from skillgpt.data.templates import PLACEHOLDERS, normalize_messages

    fmt = data_cfg.format
    needed = text_field(fmt)
    if needed not in rec:
        return None, [(needed, f"missing (data.format={fmt} needs '{needed}')")]
    try:
        turns = to_conversation(rec, fmt, list(data_cfg.caption_prompts), index)
        if fmt == "caption" and n_media is not None:  # a fixed prompt: its placeholders follow the media
            turns = [{**turns[0], "value": place_placeholders(turns[0]["value"], list(n_media.elements()),
                                                               data_cfg)}, *turns[1:]]
        turns = expand_view_placeholders(turns, data_cfg)
        msgs = normalize_messages(turns)
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        return None, [(needed, str(err))]
    found: Found = []
    in_reply = False
    for j, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        held = [p for p in PLACEHOLDERS if p in m["content"]]
        if held:
            found.append((needed, f"assistant turn {j} holds the placeholder {held[0]} (only human turns may)"))
            in_reply = True
        elif not m["content"].strip():
            found.append((needed, f"assistant turn {j} is empty (expected the reply to learn from)"))
    counts = {p: sum(m["content"].count(p) for m in msgs) for p in PLACEHOLDERS}
    for kind, ph in PLACEHOLDER_OF.items() if n_media is not None and not in_reply else ():
        if counts[ph] != n_media[kind]:
            found.append((needed if fmt == "conversation" else kind,
                          f"{counts[ph]} {ph} placeholder(s) but {n_media[kind]} {kind} item(s)"
                          + (" (data.caption_prompts hold the placeholder)" if fmt == "caption" else "")))
    return (None if found else turns), found


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _metadata(rec: dict[str, Any], where: str, label_checked: bool) -> Found:
    """Problems in the fields that only evaluation and the reports read."""
    found: Found = []
    if "id" in rec and not isinstance(rec["id"], (str, int)):
        found.append(("id", f"expected a string or an integer, got {rec['id']!r}"))
    for name in ("label", "scenario") if not label_checked else ("scenario",):
        if name in rec and not isinstance(rec[name], str):
            found.append((name, f"expected a string, got {rec[name]!r}"))
    if "score" in rec and not _number(rec["score"]):
        found.append(("score", f"expected a number, got {rec['score']!r}"))
    if "candidates" in rec or "answer" in rec:
        cands = rec.get("candidates")
        if not isinstance(cands, list) or len(cands) < 2 or not all(isinstance(c, str) for c in cands):
            found.append(("candidates", f"expected a list of at least 2 strings, got {cands!r}"))
        elif "answer" not in rec:
            found.append(("answer", "missing (a sample with 'candidates' needs the correct one)"))
        else:
            from skillgpt.eval.tasks import answer_index

            try:
                answer_index(rec, where)
            except ValueError as err:
                found.append(("answer", str(err).removeprefix(where + ": ")))
    return found


def check_sample(rec: Any, index: int, data_cfg: DataConfig, file: str, root: Path,
                 labels: Optional[Sequence[str]] = None) -> Checked:
    """Every problem of sample `index` of `file` found without a tokenizer or decoding (see the module
    docstring). Media paths resolve against `root`; with `labels`, a ``label`` must be one of them."""
    sid = str(rec.get("id", f"#{index}")) if isinstance(rec, dict) else f"#{index}"
    if not isinstance(rec, dict):
        return Checked(sid, [Problem(file, sid, "-", f"expected an object, got {type(rec).__name__}")], [], [], None)
    where = f"{file}: sample {sid}"
    media, found = _media(rec, data_cfg, root, where)
    turns, text = _turns(rec, index, data_cfg, None if found else Counter(it.kind for _, it in media))
    found += text
    label_checked = labels is not None and "label" in rec
    if label_checked and rec["label"] not in labels:
        found.append(("label", f"{rec['label']!r} is not in eval.labels {list(labels)}"))
    metadata = _metadata(rec, where, label_checked)
    return Checked(sid, [Problem(file, sid, f, m) for f, m in found],
                   [Problem(file, sid, f, m) for f, m in metadata], media, turns)


def structure_problems(rec: Any, index: int, fmt: str, file: str,
                       data_cfg: Optional[DataConfig] = None) -> list[Problem]:
    """Every problem of one sample found without a tokenizer or decoding (`check_sample`, for converters).

    Without `data_cfg`, a view-dict ``video`` is checked with all of its views."""
    if data_cfg is None:
        video = rec.get("video") if isinstance(rec, dict) else None
        data_cfg = DataConfig(train=None, format=fmt, views=list(video) if isinstance(video, dict) else [])
    root = Path(data_cfg.media_root) if data_cfg.media_root else Path(file).parent
    checked = check_sample(rec, index, data_cfg, file, root)
    return checked.errors + checked.metadata


def missing_media(checked: Checked, file: str) -> list[Problem]:
    """A problem per media file of the sample that does not exist."""
    return [Problem(file, checked.sid, fld, f"media file not found: {p}") for fld, _, p in checked.refs
            if not p.is_file()]


def tokenize_sample(checked: Checked, fmt: str, file: str, tokenizer: "PreTrainedTokenizerBase",
                    template: "str | ConversationTemplate", placeholder_tokens: Mapping[str, int], max_length: int
                    ) -> tuple[Optional[dict[str, list[int]]], Optional[Problem]]:
    """Token ids and labels of a sample without errors (``checked.turns`` set), and the problem when the
    template refuses it (no ids then) or it has more than `max_length` tokens (ids still returned)."""
    from skillgpt.data.templates import tokenize_conversation

    sid, fld = checked.sid, text_field(fmt)
    try:
        tok = tokenize_conversation(checked.turns or [], tokenizer, template, placeholder_tokens, sys.maxsize,
                                    sample_id=f"{file}:{sid}")
    except ValueError as err:
        return None, Problem(file, sid, fld, str(err).removeprefix(f"sample {file}:{sid}: "))
    n = len(tok["input_ids"])
    if n > max_length:
        return tok, Problem(file, sid, fld, f"{n} tokens (text + visual) exceed model.llm.max_length={max_length}, "
                            "the most training takes (raise max_length or shorten the sample)")
    return tok, None


def eval_task_problems(rec: dict[str, Any], sid: str, task: Optional[str], split: str, fmt: str,
                       file: str) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) of a sample of the eval split `split`: the fields `eval.task` reads."""
    if task == "multiple_choice" and ("candidates" not in rec or "answer" not in rec):
        return [Problem(file, sid, "candidates", f"eval.task=multiple_choice needs 'candidates' and 'answer' "
                        f"on the eval split ({split})")], []
    if task == "score" and "score" not in rec:
        return [Problem(file, sid, "score", f"eval.task=score needs 'score' on the eval split ({split})")], []
    if task == "proficiency" and fmt == "conversation" and "label" not in rec:
        return [], [Problem(file, sid, "label", "no label: eval.task=proficiency scores the eval split "
                            f"({split}) against each sample's label")]
    return [], []
