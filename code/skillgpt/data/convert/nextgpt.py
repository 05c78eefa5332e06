"""NExT-GPT's training data -> SkillGPT conversations (``data.format: conversation``).

Field names are those NExT-GPT's readers use (github.com/NExT-GPT/NExT-GPT, commit 60d618b; the fixtures in
tests/fixtures/nextgpt/data/ and their README name the file and line of each):

- ``nextgpt-tx2t`` (text + X -> text: comprehension / instruction data), one record shape per entry:
  - pair data ``data/T_X_pair_data/{cc3m,webvid,audiocap}/*.json``: ``{"image_name" | "video_name" | "audio_name",
    "caption", "id"?}`` (``CC3MDataset``, ``WebvidDataset``, ``AudioCapDataset``): one question (``--question``;
    default NExT-GPT's stage-1 ``prompt: ''``, so the human turn is the placeholder alone) and the caption as
    NExT-GPT trains on it (its ``process_caption``: lower case, ``"()*#:;~`` to spaces);
  - the legacy instruction data ``data/IT_data/T+X-T_data/{llava,alpaca,videochat}/*.json`` (``TX2TInstructionDataset``):
    ``{"image_name"?, "conversation": [{"from", "value", "input_modality"?}, ...]}``; the media goes first in the
    first human turn (``build_one_instance_stage_3``: ``'</Img> ' + value``), of the kind of its ``input_modality``
    (default image);
  - the current format (``data/prepare_data.py``, read by ``nextgpt/dataset/base_dataset.py``):
    ``{"input_image" | "input_video" | "input_audio": name or list, "conversations": [...]}`` with ``<image>`` /
    ``<video>`` / ``<audio>`` in the human turns (``*_comprehension.json``, ``preprocessed_llava.json``,
    ``preprocessed_alpaca.json``).
- ``nextgpt-t2xt`` (text -> text + X: the assistant generates an image, video or audio):
  - the current format (``*_generation.json``, ``{image,video,audio}_instruction_tuning.json``):
    ``{"<kind>_captions": caption or list, "<kind>_caption_embeddings": ..., "output_<kind>"?, "conversations"}``
    whose assistant turns hold ``<image>`` / ``<video>`` / ``<audio>`` where the media is generated, the n-th
    of a kind being its n-th caption (``preprocess_multimodal`` replaces them by the signal tokens);
  - the legacy ``data/IT_data/T-T+X_data/{image,video,audio}_t2x.json`` (``T2XTInstructionDataset``):
    ``{"mm_name", "conversation": [{"from": "human", "value", "input_modality"}, {"from": "gpt", "value",
    "caption", "output_modality": "image" | "video" | "audio" | "text"}]}``; the signal tokens follow the
    turn's value (``build_one_instance_stage_3``);
  - pair data as NExT-GPT's stage 2 reads it (``build_one_instance_stage_2``): the caption asks, the answer is
    the caption followed by the signal tokens.
- ``nextgpt-mosit`` (modality-switching instruction tuning, MosIT):
  - ``data/IT_data/MosIT_data/mosit.json``: ``{"image_list": [{"image_name", "data_source", "caption"}],
    "video_list": [{"video_name", ...}], "audio_list": [{"audio_name", ...}], "conversation": [{"from", "value"}]}``
    whose turns name media as ``<Image>mosit_i_0000000_00.jpg</Image>`` (``<Video>``, ``<Audio>``): in an
    assistant turn, a generated item (its caption from the list); in a human turn, an input file. Tags that
    hold a description instead of a listed file are removed, as ``preprocess_it_mosit`` does (a tag naming a
    media file that is not listed is an error);
  - ``mosit_instruction_tuning.json``: the current format, as for ``nextgpt-t2xt``.

Output: ``{"id", "image" | "video" | "audio": inputs (path, or list in placeholder order), "conversations",
"generate": {"modality", "caption"}}``; the generated item's place in the assistant turn holds the modality's
signal tokens, consecutive (``[IMG0][IMG1][IMG2][IMG3]``; counts ``--signal-tokens``, default NExT-GPT's
image=4,video=24,audio=8, as ``model.generation.*_tokens``). SkillGPT aligns one run of a modality's signal
tokens per sample (docs/generation.md), so an entry that generates k items becomes k samples
(``<id>_0`` ...): sample n holds the conversation up to the assistant turn of item n; the other items of the
same modality in it are written without their signal tokens (counted in the summary). Turns after the last
generated item are kept only in entries that generate nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from skillgpt.data.convert._common import Context, Conversion, ConversionError, entry_list, read_structured

KINDS = ("image", "video", "audio")
PLACEHOLDER = {k: f"<{k}>" for k in KINDS}
PREFIX = {"image": "IMG", "video": "VID", "audio": "AUD"}
NEXTGPT_COUNTS = {"image": 4, "video": 24, "audio": 8}
TAG = {"image": "Image", "video": "Video", "audio": "Audio"}  # MosIT's <Image>name</Image>
EXTENSIONS = {"image": (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"), "video": (".mp4", ".avi", ".mov", ".mkv", ".webm"),
              "audio": (".wav", ".mp3", ".flac", ".ogg")}
_MARK = re.compile(r"<(image|video|audio)>")
_OUT = "\x00{}\x00"  # where output n goes in a turn, until each sample renders it
_OUT_RE = re.compile("\x00(\\d+)\x00")


def process_caption(caption: str) -> str:
    """NExT-GPT's ``process_caption`` (NExT-GPT-Lagacy/code/dataset/utils.py): the caption its pair readers train on."""
    caption = re.sub(r"([\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    return caption.rstrip("\n").strip(" ")


def parse_signal_tokens(value: Optional[str]) -> dict[str, int]:
    """``--signal-tokens image=4,video=24,audio=8`` (modalities left out keep NExT-GPT's count)."""
    counts = dict(NEXTGPT_COUNTS)
    for part in (value or "").split(","):
        if not part.strip():
            continue
        name, _, n = part.partition("=")
        if name.strip() not in KINDS or not n.strip().isdigit() or int(n) < 1:
            raise ConversionError(f"--signal-tokens: expected e.g. image=4,video=24,audio=8, got {value!r}")
        counts[name.strip()] = int(n)
    return counts


def signal_text(kind: str, counts: dict[str, int]) -> str:
    return "".join(f"[{PREFIX[kind]}{i}]" for i in range(counts[kind]))


@dataclass
class _Record:
    """One entry on its way to samples: turns with placeholders (inputs) and _OUT markers (outputs)."""

    turns: list[dict[str, str]]
    inputs: list[list[tuple[str, str]]]  # per turn: (kind, media path as written) in placeholder order
    outputs: list[tuple[int, str, str]] = field(default_factory=list)  # (turn, kind, caption)


def _turns(e: dict[str, Any], key: str, entry: str, ctx: Context) -> Optional[list[dict[str, Any]]]:
    raw = e.get(key)
    if not isinstance(raw, list) or not raw:
        ctx.error(entry, key, f"expected a non-empty list of {{'from', 'value'}} turns, got {raw!r}")
        return None
    for j, t in enumerate(raw):
        if not isinstance(t, dict) or t.get("from") not in ("human", "gpt") or not isinstance(t.get("value"), str):
            ctx.error(entry, f"{key}[{j}]", f"expected {{'from': 'human' | 'gpt', 'value': text}}, got {t!r}")
            return None
        if t["from"] != ("human" if j % 2 == 0 else "gpt"):
            ctx.error(entry, f"{key}[{j}]", "turns must alternate human / gpt, starting with human")
            return None
    return raw


def _names(value: Any, entry: str, ctx: Context, fld: str) -> Optional[list[str]]:
    """A media name or list of names (NExT-GPT's readers take both)."""
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        ctx.error(entry, fld, f"expected a file name or a list of file names, got {value!r}")
        return None
    return values


def _captions(value: Any, entry: str, ctx: Context, fld: str) -> Optional[list[str]]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) and v.strip() for v in values):
        ctx.error(entry, fld, f"expected a caption or a list of captions (non-empty strings), got {value!r}")
        return None
    return [v.strip() for v in values]


def _current(e: dict[str, Any], entry: str, ctx: Context, generate: bool) -> Optional[_Record]:
    """The current format: inputs from ``input_<kind>`` (human placeholders), outputs from the assistant turns'
    placeholders and ``<kind>_captions``."""
    turns = _turns(e, "conversations", entry, ctx)
    if turns is None:
        return None
    pool: dict[str, list[str]] = {}
    for kind in KINDS:
        fld = f"input_{kind}"
        if e.get(fld):
            names = _names(e[fld], entry, ctx, fld)
            if names is None:
                return None
            pool[kind] = list(names)
        human = sum(t["value"].count(PLACEHOLDER[kind]) for t in turns[0::2])
        if human != len(pool.get(kind, [])):
            ctx.error(entry, fld, f"{len(pool.get(kind, []))} {kind} file(s) but {human} {PLACEHOLDER[kind]} in the human turns")
            return None
    captions: dict[str, list[str]] = {}
    for kind in KINDS:
        fld = f"{kind}_captions"
        marks = sum(t["value"].count(PLACEHOLDER[kind]) for t in turns[1::2])
        got = _captions(e[fld], entry, ctx, fld) if fld in e else []
        if got is None:
            return None
        if marks and not generate:
            ctx.error(entry, "conversations", f"an assistant turn generates {kind} ({PLACEHOLDER[kind]}): "
                      "convert this file with nextgpt-t2xt or nextgpt-mosit")
            return None
        if marks != len(got):
            ctx.error(entry, fld, f"{len(got)} caption(s) but {marks} {PLACEHOLDER[kind]} in the assistant turns")
            return None
        captions[kind] = got
    rec = _Record([], [])
    used = {k: 0 for k in KINDS}
    for j, t in enumerate(turns):
        if j % 2 == 0:
            kinds = [m.group(1) for m in _MARK.finditer(t["value"])]
            rec.inputs.append([(k, pool[k].pop(0)) for k in kinds])
            rec.turns.append({"from": "human", "value": t["value"]})
            continue

        def output(m: re.Match) -> str:
            kind = m.group(1)
            rec.outputs.append((j, kind, captions[kind][used[kind]]))
            used[kind] += 1
            return _OUT.format(len(rec.outputs) - 1)

        rec.turns.append({"from": "gpt", "value": _MARK.sub(output, t["value"])})
        rec.inputs.append([])
    return rec


def _legacy(e: dict[str, Any], entry: str, ctx: Context, generate: bool) -> Optional[_Record]:
    """Legacy ``conversation`` turns: media before the first human turn (``image_name`` and the first turn's
    ``input_modality``); generated media after an assistant turn with ``output_modality`` and ``caption``."""
    turns = _turns(e, "conversation", entry, ctx)
    if turns is None:
        return None
    first = dict(turns[0])
    rec = _Record([], [])
    name_field = next((f for f in ("image_name", "video_name", "audio_name") if e.get(f)), None)
    kind = first.get("input_modality") or (name_field or "image_name").split("_")[0]
    if name_field is not None and kind != "text":
        if kind not in KINDS:
            ctx.error(entry, "conversation[0].input_modality", f"expected text, image, video or audio, got {kind!r}")
            return None
        names = _names(e[name_field], entry, ctx, name_field)
        if names is None:
            return None
        first["value"] = "".join(f"{PLACEHOLDER[kind]}\n" for _ in names) + first["value"].strip()
        rec.inputs.append([(kind, n) for n in names])
    else:
        rec.inputs.append([])
    rec.turns.append({"from": "human", "value": first["value"]})
    for j, t in enumerate(turns[1:], start=1):
        value = t["value"]
        out = t.get("output_modality", "text") if t["from"] == "gpt" else "text"
        if out in KINDS:
            caption = t.get("caption")
            if not generate:
                ctx.error(entry, f"conversation[{j}].output_modality", f"generates {out}: convert this file with "
                          "nextgpt-t2xt or nextgpt-mosit")
                return None
            if not isinstance(caption, str) or not caption.strip():
                ctx.error(entry, f"conversation[{j}].caption", f"expected the {out}'s caption, got {caption!r}")
                return None
            rec.outputs.append((j, out, caption.strip()))
            value = value.rstrip() + " " + _OUT.format(len(rec.outputs) - 1)
        elif out != "text":
            ctx.error(entry, f"conversation[{j}].output_modality", f"expected text, image, video or audio, got {out!r}")
            return None
        rec.turns.append({"from": t["from"], "value": value})
        rec.inputs.append([])
    return rec


def _pair(e: dict[str, Any], entry: str, ctx: Context, generate: bool, question: Optional[str]) -> Optional[_Record]:
    """``{"<kind>_name", "caption"}``: stage 1 (describe the media) or, with `generate`, stage 2 (the caption
    asks, the answer repeats it and generates)."""
    kinds = [k for k in KINDS if f"{k}_name" in e]
    if len(kinds) != 1:
        ctx.error(entry, "image_name", f"expected one of image_name, video_name, audio_name, got {sorted(e)}")
        return None
    kind = kinds[0]
    names = _names(e[f"{kind}_name"], entry, ctx, f"{kind}_name")
    caption = e.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        ctx.error(entry, "caption", f"expected a non-empty string, got {caption!r}")
        return None
    if names is None or len(names) != 1:
        if names is not None:
            ctx.error(entry, f"{kind}_name", f"expected one file name, got {e[f'{kind}_name']!r}")
        return None
    text = process_caption(caption)
    if generate:
        return _Record([{"from": "human", "value": text}, {"from": "gpt", "value": f"{text} {_OUT.format(0)}"}],
                       [[], []], [(1, kind, caption.strip())])
    ask = PLACEHOLDER[kind] + (f"\n{question.strip()}" if question and question.strip() else "")
    return _Record([{"from": "human", "value": ask}, {"from": "gpt", "value": text}], [[(kind, names[0])], []])


def _mosit(e: dict[str, Any], entry: str, ctx: Context) -> Optional[_Record]:
    """Raw MosIT: ``<Image>name</Image>`` tags against ``image_list`` / ``video_list`` / ``audio_list``."""
    turns = _turns(e, "conversation", entry, ctx)
    if turns is None:
        return None
    listed: dict[str, dict[str, str]] = {}
    for kind in KINDS:
        fld = f"{kind}_list"
        items = e.get(fld, [])
        if not isinstance(items, list):
            ctx.error(entry, fld, f"expected a list of {{'{kind}_name', 'caption'}}, got {items!r}")
            return None
        for n, item in enumerate(items):
            name, caption = (item.get(f"{kind}_name"), item.get("caption")) if isinstance(item, dict) else (None, None)
            if not isinstance(name, str) or not name or not isinstance(caption, str) or not caption.strip():
                ctx.error(entry, f"{fld}[{n}]", f"expected {{'{kind}_name', 'caption'}} strings, got {item!r}")
                return None
            listed[name] = {"kind": kind, "caption": caption.strip()}
    tag = re.compile(r"<(Image|Video|Audio)>(.*?)</\1>", re.S)
    described = re.compile(r"<(image|video|audio)>(.*?)</\1>", re.S)  # removed by preprocess_it_mosit
    rec = _Record([], [])
    for j, t in enumerate(turns):
        human = t["from"] == "human"
        inputs: list[tuple[str, str]] = []
        problem: list[str] = []

        def media(m: re.Match) -> str:
            kind, name = m.group(1).lower(), m.group(2).strip()
            item = listed.get(name)
            if item is None or item["kind"] != kind:
                if name.lower().endswith(EXTENSIONS[kind]):
                    problem.append(f"names {kind} {name!r}, which is not in {kind}_list")
                else:
                    ctx.notes["MosIT tag(s) holding a description removed (as NExT-GPT's preprocess_it_mosit)"] += 1
                return ""
            if human:
                inputs.append((kind, name))
                return PLACEHOLDER[kind]
            rec.outputs.append((j, kind, item["caption"]))
            return _OUT.format(len(rec.outputs) - 1)

        value = tag.sub(media, described.sub("", t["value"]))
        if problem:
            ctx.error(entry, f"conversation[{j}]", problem[0])
            return None
        if _MARK.search(described.sub("", t["value"])) and not human:
            ctx.error(entry, f"conversation[{j}]", "an assistant turn holds a media placeholder")
            return None
        rec.turns.append({"from": t["from"], "value": re.sub(r"[ \t]{2,}", " ", value).strip()})
        rec.inputs.append(inputs)
    return rec


def _samples(rec: _Record, sid: str, ctx: Context, counts: dict[str, int]) -> list[dict[str, Any]]:
    """One sample per generated item (the conversation up to its turn), or one without `generate`."""
    plans = [(n, rec.outputs[n]) for n in range(len(rec.outputs))] or [(None, None)]
    out = []
    for n, target in plans:
        end = target[0] + 1 if target is not None else len(rec.turns)
        turns = []
        for t in rec.turns[:end]:
            def render(m: re.Match) -> str:
                k = int(m.group(1))
                kind = rec.outputs[k][1]
                if target is not None and k != n and kind == target[1]:
                    ctx.notes[f"{kind} item(s) of another sample written without signal tokens"] += 1
                    return ""
                return signal_text(kind, counts)

            value = _OUT_RE.sub(render, t["value"])
            turns.append({"from": t["from"], "value": re.sub(r"[ \t]{2,}", " ", value).strip()})
        sample: dict[str, Any] = {"id": sid if len(plans) == 1 else f"{sid}_{n}"}
        for kind in KINDS:
            files = [ctx.path(p) for inputs in rec.inputs[:end] for k, p in inputs if k == kind]
            if files:
                sample[kind] = files[0] if len(files) == 1 else files
        sample["conversations"] = turns
        if target is not None:
            sample["generate"] = {"modality": target[1], "caption": target[2]}
        out.append(sample)
    return out


def _convert(input_path: Path, ctx: Context, mode: str, question: Optional[str] = None,
             signal_tokens: Optional[str] = None) -> Conversion:
    counts = parse_signal_tokens(signal_tokens)
    samples: list[dict[str, Any]] = []
    for i, e in enumerate(entry_list(read_structured(input_path), input_path)):
        raw_id = e.get("id", e.get("audio_id")) if isinstance(e, dict) else None
        entry = ctx.entry(i, "id", raw_id)
        if not isinstance(e, dict):
            ctx.error(entry, None, f"expected an object, got {type(e).__name__}")
            continue
        generate = mode != "tx2t"
        if "conversations" in e:
            rec = _current(e, entry, ctx, generate)
        elif mode == "mosit" and "conversation" in e:
            rec = _mosit(e, entry, ctx)
        elif "conversation" in e:
            rec = _legacy(e, entry, ctx, generate)
        elif "caption" in e and mode != "mosit":
            rec = _pair(e, entry, ctx, generate, question)
        else:
            shapes = {"tx2t": "'conversations', 'conversation' or '<kind>_name' + 'caption'",
                      "t2xt": "'conversations', 'conversation' or '<kind>_name' + 'caption'",
                      "mosit": "'conversation' (mosit.json) or 'conversations' (mosit_instruction_tuning.json)"}
            ctx.error(entry, "conversations", f"expected {shapes[mode]}, found keys {sorted(e)[:10]}")
            continue
        if rec is None:
            continue
        if mode == "t2xt" and not rec.outputs:
            ctx.error(entry, "conversations", "generates nothing (no <image>/<video>/<audio> or output_modality in "
                      "an assistant turn): convert this file with nextgpt-tx2t")
            continue
        sid = str(raw_id) if raw_id is not None else f"{input_path.stem}_{i}"
        for sample in _samples(rec, sid, ctx, counts):
            if ctx.claim_id(sample["id"], entry):
                samples.append(sample)
    return ctx.finish(samples)


def convert_tx2t(input_path: Path, ctx: Context, *, question: Optional[str] = None) -> Conversion:
    return _convert(input_path, ctx, "tx2t", question=question)


def convert_t2xt(input_path: Path, ctx: Context, *, signal_tokens: Optional[str] = None) -> Conversion:
    return _convert(input_path, ctx, "t2xt", signal_tokens=signal_tokens)


def convert_mosit(input_path: Path, ctx: Context, *, signal_tokens: Optional[str] = None) -> Conversion:
    return _convert(input_path, ctx, "mosit", signal_tokens=signal_tokens)
