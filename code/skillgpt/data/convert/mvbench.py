"""MVBench-style multiple choice -> conversations with the options, for ``eval.task=multiple_choice``.

Input: a JSON list (one MVBench task file) of ``{"video": "clip.mp4", "question": "...",
"candidates": ["...", "..."], "answer": "<the correct candidate's text>"}``, optionally ``start``/``end``:
the segment of the video (seconds, both or neither, ``0 <= start < end``) the question is about; it is kept
and SkillGPT samples the clips inside it only (training, eval, feature cache). Output (``id``:
``<input stem>_<index>`` unless the entry has one)::

    {"id": "action_sequence_0", "video": "...", "candidates": [...], "answer": "...",
     "conversations": [
       {"from": "human",
        "value": "<video>\\nQuestion: ...\\nOptions:\\n(A) ...\\n(B) ...\\nAnswer with the option's letter."},
       {"from": "gpt", "value": "(B) ..."}]}
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from skillgpt.data.convert._common import Context, Conversion, letter, object_entries

INSTRUCTION = "Answer with the option's letter."


def convert(input_path: Path, ctx: Context) -> Conversion:
    from skillgpt.data.media import DataError, read_segment  # torch: only when converting

    samples = []
    for i, entry, e in object_entries(input_path, ctx):
        ok = True
        for name in ("video", "question"):
            if not isinstance(e.get(name), str) or not e[name].strip():
                ctx.error(entry, name, f"expected a non-empty string, got {e.get(name)!r}")
                ok = False
        cands = e.get("candidates")
        if not isinstance(cands, list) or not 2 <= len(cands) <= 26 or not all(isinstance(c, str) for c in cands):
            ctx.error(entry, "candidates", f"expected a list of 2 to 26 strings, got {cands!r}")
            continue
        answer = e.get("answer")
        if not isinstance(answer, str) or answer.strip() not in [c.strip() for c in cands]:
            ctx.error(entry, "answer", f"{answer!r} is not one of the candidates {cands}")
            continue
        try:
            segment = read_segment(e, "")
        except DataError as err:
            field, _, message = str(err).removeprefix(": field '").partition("' ")
            ctx.error(entry, field, message)
            continue
        if not ok:
            continue
        options = [f"({letter(j)}) {c}" for j, c in enumerate(cands)]
        gold_index = [c.strip() for c in cands].index(answer.strip())
        gold = options[gold_index]
        sid = str(e["id"]) if e.get("id") is not None else f"{input_path.stem}_{i}"
        if not ctx.claim_id(sid, entry):
            continue
        sample: dict[str, Any] = {"id": sid, "video": ctx.path(e["video"]), "candidates": cands,
                                  "answer": cands[gold_index]}
        if segment is not None:
            sample["start"], sample["end"] = segment
        prompt = "\n".join(["<video>", f"Question: {e['question'].strip()}", "Options:", *options, INSTRUCTION])
        sample["conversations"] = [{"from": "human", "value": prompt}, {"from": "gpt", "value": gold}]
        samples.append(sample)
    return ctx.finish(samples)
