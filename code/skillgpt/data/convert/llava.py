"""LLaVA / VideoChat instruction data -> SkillGPT conversations.

Input: a JSON list whose entries are either

- LLaVA (also Video-ChatGPT, Valley, LLaVA-NeXT video): ``{"id", "image" | "video": path or list,
  "conversations": [{"from": "human", "value": "<image>\\nWhat is ..."}, {"from": "gpt", "value": "..."}]}``
- VideoChat / VideoChat2: ``{"video" | "image": path, "QA": [{"i": "instruction"?, "q": "...", "a": "..."}]}``
  (each q/a pair is one human/gpt turn; the first ``i`` is put before the first question).

Output: ``{"id", "video"/"image", "conversations"}`` (``id`` default ``<input stem>_<index>``). When the turns
hold no placeholder for a media field, one per file is put at the start of the first human turn
("<video>\\n..."); a video sample written with LLaVA-NeXT's ``<image>`` for its video gets ``<video>``.
Text-only entries are kept as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from skillgpt.data.convert._common import Context, Conversion, object_entries

PLACEHOLDER = {"video": "<video>", "image": "<image>"}


def _turns(e: dict[str, Any], ctx: Context, entry: str) -> Optional[list[dict[str, str]]]:
    if "conversations" in e:
        conv = e["conversations"]
        if not isinstance(conv, list) or not conv:
            ctx.error(entry, "conversations", f"expected a non-empty list of turns, got {conv!r}")
            return None
        turns = []
        for j, t in enumerate(conv):
            if not isinstance(t, dict) or not isinstance(t.get("from", t.get("role")), str) \
                    or not isinstance(t.get("value", t.get("content")), str):
                ctx.error(entry, f"conversations[{j}]", f"expected {{'from', 'value'}} strings, got {t!r}")
                return None
            turns.append({"from": t.get("from", t.get("role")), "value": t.get("value", t.get("content"))})
        return turns
    if "QA" in e:
        qa = e["QA"]
        if not isinstance(qa, list) or not qa:
            ctx.error(entry, "QA", f"expected a non-empty list of {{'q', 'a'}} objects, got {qa!r}")
            return None
        turns = []
        for j, pair in enumerate(qa):
            q = pair.get("q") if isinstance(pair, dict) else None
            a = pair.get("a") if isinstance(pair, dict) else None
            if not isinstance(q, str) or not isinstance(a, str) or not a.strip():
                ctx.error(entry, f"QA[{j}]", f"expected 'q' and a non-empty 'a' (strings), got {pair!r}")
                return None
            if j == 0 and isinstance(pair.get("i"), str) and pair["i"].strip():
                q = f"{pair['i'].strip()}\n{q}"
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
        return turns
    ctx.error(entry, "conversations", "expected 'conversations' (LLaVA) or 'QA' (VideoChat)")
    return None


def convert(input_path: Path, ctx: Context) -> Conversion:
    from skillgpt.data.templates import normalize_messages

    samples = []
    for i, entry, e in object_entries(input_path, ctx):
        turns = _turns(e, ctx, entry)
        if turns is None:
            continue
        media: dict[str, list[str]] = {}
        for kind in ("video", "image"):
            value = e.get(kind)
            if value is None:
                continue
            files = [value] if isinstance(value, str) else value
            if not isinstance(files, list) or not files or not all(isinstance(f, str) and f for f in files):
                ctx.error(entry, kind, f"expected a path or a list of paths, got {value!r}")
                turns = None
                break
            media[kind] = files
        if turns is None:
            continue
        text = "".join(t["value"] for t in turns)
        if "video" in media and "image" not in media and "<video>" not in text and "<image>" in text:
            turns = [{**t, "value": t["value"].replace("<image>", "<video>")} for t in turns]
            ctx.notes["video samples with <image> placeholders renamed <video>"] += 1
            text = "".join(t["value"] for t in turns)
        first_human = next((j for j, t in enumerate(turns) if t["from"] in ("human", "user")), None)
        for kind, files in media.items():
            ph = PLACEHOLDER[kind]
            if ph not in text and first_human is not None:
                turns[first_human] = {**turns[first_human], "value": ph + "\n" + turns[first_human]["value"]}
                for _ in files[1:]:
                    turns[first_human]["value"] = ph + turns[first_human]["value"]
                ctx.notes[f"{ph} placeholders inserted"] += len(files)
            count = sum(t["value"].count(ph) for t in turns)
            if count != len(files):
                ctx.error(entry, "conversations", f"{count} {ph} placeholder(s) for {len(files)} {kind} file(s)")
        for ph in ("<video>", "<image>", "<audio>"):
            kind = ph.strip("<>")
            if kind not in media and ph in "".join(t["value"] for t in turns):
                ctx.error(entry, "conversations", f"has {ph} but the entry has no '{kind}' field")
        try:
            normalize_messages(turns)
        except ValueError as err:
            ctx.error(entry, "conversations", str(err))
        for j, t in enumerate(turns):
            if t["from"] in ("gpt", "assistant") and any(ph in t["value"] for ph in ("<video>", "<image>", "<audio>")):
                ctx.error(entry, f"conversations[{j}]", "an assistant (gpt) turn holds a media placeholder")
        sid = str(e["id"]) if e.get("id") is not None else f"{input_path.stem}_{i}"
        if not ctx.claim_id(sid, entry):
            continue
        sample: dict[str, Any] = {"id": sid}
        for kind, files in media.items():
            paths = [ctx.path(f) for f in files]
            sample[kind] = paths[0] if isinstance(e[kind], str) else paths
        sample["conversations"] = turns
        samples.append(sample)
    return ctx.finish(samples)
