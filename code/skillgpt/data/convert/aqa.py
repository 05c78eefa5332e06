"""Action-quality assessment annotations (score per clip) -> score-rating conversations.

Shared by the FineDiving and MTL-AQA converters, which differ only in the score field's name.
Input: a dict video id -> annotation (JSON, or the public ``.pkl`` files: tuple keys such as
``(1, 4)`` become the id ``"1_4"`` and fill ``{0}``, ``{1}`` in ``video_pattern``). Output sample::

    {"id": "01_4", "video": "videos/01_4.mp4", "score": 78.4, "difficulty": 3.0,
     "conversations": [{"from": "human", "value": "<video>\\nWhat score does this dive get?"},
                       {"from": "gpt", "value": "Score: 78.40 (difficulty 3.0)."}]}

``score`` and ``difficulty`` stay on the sample for ``eval.task=score`` (Spearman's rho).
``split_file`` (JSON / pickle list or a text file, one id per line) keeps those ids, in its order.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from skillgpt.data.convert._common import (
    Context, Conversion, ConversionError, format_pattern, id_of, number, read_split_ids, read_structured,
    with_placeholder,
)

QUESTION = "<video>\nWhat score does this dive get?"


def answer_text(score: float, difficulty: Optional[float]) -> str:
    return f"Score: {score:.2f}" + (f" (difficulty {difficulty:.1f})." if difficulty is not None else ".")


def convert_scores(input_path: Path, ctx: Context, score_field: str, video_pattern: Optional[str],
                   split_file: Optional[str], question: Optional[str]) -> Conversion:
    data = read_structured(input_path)
    if not isinstance(data, dict):
        raise ConversionError(f"{input_path}: expected an object video id -> {{'{score_field}', 'difficulty', ...}}, "
                              f"got {type(data).__name__}")
    by_id = {id_of(k): (k, v) for k, v in data.items()}
    if split_file:
        ids = read_split_ids(Path(split_file))
        unknown = [i for i in ids if i not in by_id]
        for i in unknown[:50]:
            ctx.error(f"split entry {i}", None,
                      f"{split_file} lists {i!r}, which {input_path.name} has no annotation for")
        ids = [i for i in ids if i in by_id]
    else:
        ids = list(by_id)
    pattern = video_pattern or "{video_id}.mp4"
    prompt = with_placeholder(question, QUESTION)
    samples = []
    for index, vid in enumerate(ids):
        key, ann = by_id[vid]
        entry = ctx.entry(index, "video_id", vid)
        if not isinstance(ann, dict):
            ctx.error(entry, None, f"expected an object with '{score_field}', got {type(ann).__name__}")
            continue
        score = number(ann.get(score_field))
        if score is None:
            ctx.error(entry, score_field, f"expected a number, got {ann.get(score_field)!r}"
                      + ("" if score_field in ann else f" (fields: {sorted(map(str, ann))[:12]})"))
            continue
        difficulty = number(ann.get("difficulty")) if ann.get("difficulty") is not None else None
        if ann.get("difficulty") is not None and difficulty is None:
            ctx.error(entry, "difficulty", f"expected a number, got {ann.get('difficulty')!r}")
            continue
        parts = key if isinstance(key, (tuple, list)) else (key,)
        video = format_pattern(pattern, entry, ctx, *parts, video_id=vid)
        if video is None or not ctx.claim_id(vid, entry):
            continue
        sample: dict[str, Any] = {"id": vid, "video": ctx.path(video), "score": score}
        if difficulty is not None:
            sample["difficulty"] = difficulty
        sample["conversations"] = [{"from": "human", "value": prompt},
                                   {"from": "gpt", "value": answer_text(score, difficulty)}]
        samples.append(sample)
    return ctx.finish(samples)
