"""The training files of SkillGPT's ancestors -> SkillGPT conversations (``data.format: conversation``).

- ``pandagpt``: PandaGPT's ``pandagpt4_visual_instruction_data.json``, a list of ``{"image_name": "000000.jpg",
  "conversation": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}``; images under
  ``--media-root`` (PandaGPT's ``image_root_path``). PandaGPT puts the image before the first question
  (``<Img>`` image ``</Img> question``), so ``<image>\\n`` is put at the start of the first human turn.
- ``minigpt4-align``: MiniGPT-4's ``cc_sbu_align/filter_cap.json``, ``{"annotations": [{"image_id": "2",
  "caption": "..."}]}``, images ``image/<image_id>.jpg`` beside it (cc_sbu_dataset.py). MiniGPT-4 asks one of
  its alignment prompts (``--question``, default its first: "Describe this image in detail.").
- ``video-chatgpt``: Video-ChatGPT's raw VideoInstruct data, a list of ``{"video_id": "v_k_ZXmr8pmrs", "q": ...,
  "a": ...}``; the file is ``--video-pattern`` filled with ``video_id`` (default ``"{video_id}.mp4"``).
- ``llava-pretrain``: LLaVA's ``blip_laion_cc_sbu_558k.json`` (``{"id", "image", "conversations"}`` with the
  instruction and ``<image>`` in either order); as LLaVA's ``preprocess_multimodal``, a turn's ``<image>`` is
  removed, the rest stripped, and ``<image>\\n`` put first.
Each output sample: ``{"id", "image" | "video", "conversations"}`` (``minigpt4-align`` also keeps ``caption``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

from skillgpt.data.convert._common import Context, Conversion, entry_list, format_pattern, read_structured

MINIGPT4_PROMPT = "Describe this image in detail."  # the first line of MiniGPT-4's prompts/alignment.txt


def _text(e: dict, key: str, entry: str, ctx: Context) -> Optional[str]:
    value = e.get(key)
    if not isinstance(value, str) or not value.strip():
        ctx.error(entry, key, f"expected a non-empty string, got {value!r}")
        return None
    return value


def _turns(raw: Any, entry: str, ctx: Context, key: str) -> Optional[list[dict[str, str]]]:
    if not isinstance(raw, list) or not raw:
        ctx.error(entry, key, f"expected a non-empty list of {{'from', 'value'}} turns, got {raw!r}")
        return None
    turns = []
    for j, t in enumerate(raw):
        if not isinstance(t, dict) or not isinstance(t.get("from"), str) or not isinstance(t.get("value"), str):
            ctx.error(entry, f"{key}[{j}]", f"expected {{'from', 'value'}} strings, got {t!r}")
            return None
        turns.append({"from": t["from"], "value": t["value"]})
    from skillgpt.data.templates import normalize_messages

    try:
        normalize_messages(turns)
    except ValueError as err:
        ctx.error(entry, key, str(err))
        return None
    return turns


def _objects(input_path: Path, ctx: Context, key: Optional[str] = None):
    for i, e in enumerate(entry_list(read_structured(input_path), input_path, key)):
        entry = ctx.entry(i)
        if not isinstance(e, dict):
            ctx.error(entry, None, f"expected an object, got {type(e).__name__}")
            continue
        yield i, entry, e


def _image_conversations(input_path: Path, ctx: Context, image_field: str,
                         turns_field: str) -> Iterator[tuple[int, str, dict[str, Any], str, list[dict[str, str]]]]:
    """(index, entry, object, image name, turns) of every object whose image name and turns are valid (the
    others are reported to `ctx`)."""
    for i, entry, e in _objects(input_path, ctx):
        image, turns = _text(e, image_field, entry, ctx), _turns(e.get(turns_field), entry, ctx, turns_field)
        if image is not None and turns is not None:
            yield i, entry, e, image, turns


def _add(samples: list, ctx: Context, sid: str, entry: str, sample: dict[str, Any]) -> None:
    if ctx.claim_id(sid, entry):
        samples.append({"id": sid, **sample})


def convert_pandagpt(input_path: Path, ctx: Context) -> Conversion:
    samples: list[dict[str, Any]] = []
    for i, entry, _, name, turns in _image_conversations(input_path, ctx, "image_name", "conversation"):
        if any(ph in t["value"] for t in turns for ph in ("<image>", "<video>", "<audio>")):
            ctx.error(entry, "conversation", "already holds a media placeholder (PandaGPT's data has none)")
            continue
        turns[0] = {**turns[0], "value": "<image>\n" + turns[0]["value"]}
        _add(samples, ctx, f"{Path(name).stem}_{i}", entry,
             {"image": ctx.path(name), "conversations": turns})
    return ctx.finish(samples)


def convert_minigpt4(input_path: Path, ctx: Context, *, question: Optional[str] = None) -> Conversion:
    prompt = "<image>\n" + (question or MINIGPT4_PROMPT)
    samples: list[dict[str, Any]] = []
    for _, entry, e in _objects(input_path, ctx, "annotations"):
        caption = _text(e, "caption", entry, ctx)
        image_id = e.get("image_id")
        if not isinstance(image_id, (str, int)) or str(image_id) == "":
            ctx.error(entry, "image_id", f"expected a string or number, got {image_id!r}")
            continue
        if caption is None:
            continue
        _add(samples, ctx, str(image_id), entry, {
            "image": ctx.path(f"image/{image_id}.jpg"), "caption": caption,
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": caption}]})
    return ctx.finish(samples)


def convert_video_chatgpt(input_path: Path, ctx: Context, *, video_pattern: Optional[str] = None) -> Conversion:
    pattern = video_pattern or "{video_id}.mp4"
    samples: list[dict[str, Any]] = []
    for i, entry, e in _objects(input_path, ctx):
        vid, q, a = (_text(e, k, entry, ctx) for k in ("video_id", "q", "a"))
        if vid is None or q is None or a is None:
            continue
        file = format_pattern(pattern, entry, ctx, video_id=vid)
        if file is None:
            continue
        _add(samples, ctx, f"{vid}_{i}", entry, {"video": ctx.path(file), "conversations": [
            {"from": "human", "value": "<video>\n" + q.replace("<video>", "").strip()}, {"from": "gpt", "value": a}]})
    return ctx.finish(samples)


def _image_first(value: str) -> str:
    """LLaVA's preprocess_multimodal for a turn holding <image>."""
    if "<image>" not in value:
        return value
    return ("<image>\n" + value.replace("<image>", "").strip()).strip()


def convert_llava_pretrain(input_path: Path, ctx: Context) -> Conversion:
    samples: list[dict[str, Any]] = []
    for i, entry, e, image, turns in _image_conversations(input_path, ctx, "image", "conversations"):
        if sum(t["value"].count("<image>") for t in turns) != 1 or "<image>" in turns[1]["value"]:
            ctx.error(entry, "conversations", "expected one <image>, in the human turn")
            continue
        turns = [{**t, "value": _image_first(t["value"])} for t in turns]
        sid = str(e["id"]) if e.get("id") is not None else f"{input_path.stem}_{i}"
        _add(samples, ctx, sid, entry, {"image": ctx.path(image), "conversations": turns})
    return ctx.finish(samples)
