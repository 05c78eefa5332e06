"""A corpus of broken media and annotations, built here, against both policies of `data.on_bad_sample`.

Every entry has a documented outcome: `ok` (decodes and trains) or the field/problem the report names.
`error` stops before training listing every bad sample; `skip` keeps exactly the good ones and lists
the rest. Whole-file problems (malformed JSON, non-UTF-8) stop both policies, naming the file.
`skillgpt data validate` refuses exactly the samples training refuses, plus those whose fields only
evaluation reads are bad (VALIDATE_ONLY: training does not read them, so it keeps those samples).
"""
from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from skillgpt.data.dataset import DataError, SkillDataset
from skillgpt.data.validate import validate_config
from skillgpt.models.build import build_model

QUESTION = "<video>\nWhat is the proficiency level of this athlete?"
# samples training keeps (it reads none of these fields) and validate reports, with the problem it names
VALIDATE_ONLY = {"bad_score": "field 'score': expected a number", "answer_not_a_candidate": "field 'answer'"}


def _mp4(path: Path, frames: int = 16, size: tuple[int, int] = (64, 48), fps: int = 8, gray: bool = False,
         rotate: int | None = None, vfr: bool = False, pix_fmt: str = "yuv420p") -> Path:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], pix_fmt
        if vfr:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotate is not None:
            stream.set_display_rotation(rotate)  # a display matrix (PyAV ignores the old "rotate" tag)
        t = 0
        for i in range(frames):
            arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            if gray:
                arr[:] = arr[..., :1]
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            if vfr:
                frame.pts, frame.time_base = t, Fraction(1, 1000)
                t += 80 if i % 2 else 170
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 10) * 0.3).astype(np.float32)[None]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _sample(sid: str, video: str, question: str = QUESTION, answer: str = "Novice", **extra) -> dict:
    return {"id": sid, "video": video, "label": extra.pop("label", "Novice"),
            "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], **extra}


def build_corpus(root: Path) -> tuple[list[dict], dict[str, str]]:
    """(samples, expected outcome per id: "ok" or a substring of the reported problem)."""
    good = _mp4(root / "good.mp4")
    truncated = root / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("these are my training notes, not a video\n" * 50)
    (root / "wrong_ext.avi").write_bytes(good.read_bytes())
    locked = _mp4(root / "locked.mp4")
    os.chmod(locked, 0)
    root_user = os.geteuid() == 0
    media = {
        "zero_byte": ("empty.mp4", "file is empty"),
        "truncated_mp4": ("truncated.mp4", "truncated.mp4"),
        "wrong_extension": ("wrong_ext.avi", "ok"),
        "audio_only": (_audio_only(root / "audio_only.mp4").name, "audio_only.mp4"),
        "single_frame": (_mp4(root / "one.mp4", frames=1).name, "ok"),
        "very_short": (_mp4(root / "short.mp4", frames=3).name, "ok"),
        "huge_resolution": (_mp4(root / "huge.mp4", frames=2, size=(1920, 1080)).name, "ok"),
        "odd_size": (_mp4(root / "odd.mp4", size=(65, 37), pix_fmt="yuv444p").name, "ok"),
        "rotated": (_mp4(root / "rotated.mp4", rotate=90).name, "ok"),
        "grayscale": (_mp4(root / "gray.mp4", gray=True).name, "ok"),
        "variable_frame_rate": (_mp4(root / "vfr.mp4", vfr=True).name, "ok"),
        "not_a_video": ("text.mp4", "text.mp4"),
        "missing_file": ("does_not_exist.mp4", "media file not found"),
        "unreadable": ("locked.mp4", "ok" if root_user else "locked.mp4"),  # root reads anything
    }
    samples = [_sample(name, path) for name, (path, _) in media.items()]
    expected = {name: outcome for name, (_, outcome) in media.items()}
    openai_turns = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ""}]
    annotations = {
        "missing_field": ({"id": "missing_field", "video": "good.mp4"}, "field 'conversations': missing"),
        "unknown_label": (_sample("unknown_label", "good.mp4", label="Grandmaster"),
                          "field 'label': 'Grandmaster' is not in eval.labels"),
        "label_not_a_string": (_sample("label_not_a_string", "good.mp4", label=3), "field 'label': 3 is not in"),
        "missing_placeholder": (_sample("missing_placeholder", "good.mp4", question="Level?"), "0 <video> placeholder"),
        "extra_placeholder": (_sample("extra_placeholder", "good.mp4", question=QUESTION + " <video>"), "2 <video>"),
        "placeholder_in_answer": (_sample("placeholder_in_answer", "good.mp4", answer="see <video>"),
                                  "assistant turn 1 holds the placeholder <video>"),
        "over_long": (_sample("over_long", "good.mp4", answer="very " * 3000 + "long"),
                      "exceed model.llm.max_length"),
        "empty_answer": (_sample("empty_answer", "good.mp4", answer="  "),
                         "field 'conversations': assistant turn 1 is empty"),
        "empty_openai_answer": ({"id": "empty_openai_answer", "video": "good.mp4", "conversations": openai_turns},
                                "field 'conversations': assistant turn 1 is empty"),
        "turns_not_a_list": ({"id": "turns_not_a_list", "video": "good.mp4", "conversations": 7},
                             "field 'conversations': a conversation must be a non-empty list"),
        "turn_without_role": (_sample("turn_without_role", "good.mp4") | {"conversations": [{"value": QUESTION}]},
                              "field 'conversations': turn 0 has no 'from' or 'role'"),
        "video_not_a_path": (_sample("video_not_a_path", "good.mp4") | {"video": 5}, "field 'video': must be a path"),
        "nested_video_list": (_sample("nested_video_list", "good.mp4") | {"video": [["good.mp4"]]},
                              "field 'video[0]'"),
        "bad_score": (_sample("bad_score", "good.mp4", score="high"), "ok"),
        "answer_not_a_candidate": (_sample("answer_not_a_candidate", "good.mp4", candidates=["a", "b"], answer="c"),
                                   "ok"),
        "fine": (_sample("fine", "good.mp4"), "ok"),
    }
    samples += [s for s, _ in annotations.values()]
    expected.update({name: outcome for name, (_, outcome) in annotations.items()})
    return samples, expected


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    samples, expected = build_corpus(root)
    (root / "data.json").write_text(json.dumps(samples))
    assert len(expected) >= 20
    return root, expected


def _config(ws, root: Path, policy: str = "error"):
    return ws.config(2, "bad", "train.init_from=null", f"data.on_bad_sample={policy}", "data.cache_videos=false",
                     "data.video.num_clips=2", f"data.train={root / 'data.json'}", "data.val=null", "data.test=null")


def _dataset(ws, root: Path, policy: str) -> SkillDataset:
    cfg = _config(ws, root, policy)
    model, tok = build_model(cfg)
    return SkillDataset(root / "data.json", cfg.data, tok, cfg.model.llm.template, model.placeholder_tokens(),
                        cfg.model.llm.max_length, labels=list(cfg.eval.labels))


def test_error_policy_stops_before_training_listing_every_bad_sample(tiny_workspace, corpus):
    root, expected = corpus
    with pytest.raises(DataError) as err:
        _dataset(tiny_workspace, root, "error")
    message = str(err.value)
    bad = {k: v for k, v in expected.items() if v != "ok"}
    assert f"{len(bad)} bad sample(s)" in message
    for sid, problem in bad.items():
        line = next(ln for ln in message.splitlines() if f"sample {sid}" in ln)
        assert problem in line, (sid, line)


def test_skip_policy_keeps_exactly_the_good_samples_and_lists_the_rest(tiny_workspace, corpus):
    root, expected = corpus
    ds = _dataset(tiny_workspace, root, "skip")
    assert {ex.id for ex in ds.examples} == {k for k, v in expected.items() if v == "ok"}
    skipped = {s["id"]: s["problem"] for s in ds.skipped}
    assert set(skipped) == {k for k, v in expected.items() if v != "ok"}
    for sid, problem in skipped.items():
        assert expected[sid] in problem
    for i in range(len(ds)):  # every kept sample really loads
        assert ds[i]["media"][0][1].shape[0] == 2


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_whole_file_problems_stop_both_policies(tiny_workspace, tmp_path, policy):
    for name, content, problem in (("broken.json", b'[{"id": 1,', "not valid UTF-8 JSON"),
                                   ("latin1.json", '[{"id": "caf\xe9"}]'.encode("latin-1"), "not valid UTF-8 JSON")):
        (tmp_path / "data.json").write_bytes(content)
        with pytest.raises(DataError, match=problem):
            _dataset(tiny_workspace, tmp_path, policy)


def test_validate_refuses_what_training_refuses(tiny_workspace, corpus):
    """One set of checks: validate's errors name the samples training refuses (with the same problem),
    and besides them only the samples whose evaluation-only fields are bad."""
    root, expected = corpus
    cfg = _config(tiny_workspace, root)
    model, tok = build_model(cfg)
    report = validate_config(cfg, ["train"], tokenizer=tok, placeholder_tokens=model.placeholder_tokens(),
                             progress=False, use_cache=False)
    found: dict[str, list[str]] = {}
    for p in report.errors:
        found.setdefault(p.sample, []).append(str(p))
    dataset_refuses = {k for k, v in expected.items() if v != "ok"}
    assert set(found) == dataset_refuses | set(VALIDATE_ONLY), report.format()
    for sid, problem in {**{k: expected[k] for k in dataset_refuses}, **VALIDATE_ONLY}.items():
        assert any(problem in line and str(root / "data.json") in line for line in found[sid]), (sid, found[sid])
