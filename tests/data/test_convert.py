"""`skillgpt prepare-data`: each public annotation shape -> SkillGPT JSON that loads and validates;
bad entries are reported by input file, entry and field."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from skillgpt.cli import main
from skillgpt.data.convert import CONVERTERS, prepare_data
from skillgpt.data.convert._common import ConversionError, read_structured
from skillgpt.data.dataset import SkillDataset, read_samples
from skillgpt.data.prompt import eval_question, expand_view_placeholders, place_placeholders
from skillgpt.data.templates import tokenize_conversation
from skillgpt.data.validate import validate_config
from skillgpt.models.build import build_model
from skillgpt.models.llm import load_tokenizer

LEVELS = ["Novice", "Early Expert", "Intermediate Expert", "Late Expert"]


def _videos(ws) -> list[str]:
    """Media-root-relative paths of the workspace's real mp4 clips."""
    return sorted(str(p.relative_to(ws.data)) for p in (ws.data / "videos" / "train").glob("*.mp4"))


def _prepare(capsys, fmt: str, src: Path, out: Path, *options: str) -> tuple[int, str, str]:
    code = main(["prepare-data", fmt, "--input", str(src), "--out", str(out), *options])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _load_and_validate(ws, out: Path, stage: int = 2, *overrides: str) -> SkillDataset:
    """The converted file loads with SkillDataset and passes `validate_config` (decoding every file)."""
    cfg = ws.config(stage, "convert", f"data.train={out}", "data.val=null", "data.test=null", "train.init_from=null",
                    *overrides)
    model, _ = build_model(cfg, on_meta=True)
    tokens = model.placeholder_tokens()
    tokenizer = load_tokenizer(cfg.model.llm.path)
    ds = SkillDataset(out, cfg.data, tokenizer, cfg.model.llm.template, tokens, cfg.model.llm.max_length)
    report = validate_config(cfg, ["train"], tokenizer=tokenizer, placeholder_tokens=tokens, use_cache=False,
                             progress=False)
    assert report.ok, report.format()
    assert report.splits[0].samples == len(ds)
    _assert_eval_prompt_is_the_training_prompt(out, cfg, tokenizer, tokens, ds)
    return ds


def _prompt_end(labels: list[int]) -> int:
    return next(i for i, label in enumerate(labels) if label != -100)


def _assert_eval_prompt_is_the_training_prompt(out: Path, cfg, tokenizer, tokens, ds: SkillDataset) -> None:
    """Eval scores a converted sample with its own first human turn (placeholders from its media, views
    expanded), as `SkillAssistant.label_scores` builds it: those tokens are the training sample's prompt."""
    if cfg.data.format != "conversation":
        return  # caption pairs train on data.caption_prompts and carry no question of their own
    records = {str(r.get("id", f"#{i}")): r for i, r in enumerate(read_samples(out))}
    for ex in ds.examples:
        rec = records[ex.id]
        question = place_placeholders(eval_question(rec, cfg.eval.question), [it.kind for it in ex.media], cfg.data)
        answer = next(t["value"] for t in rec["conversations"] if t["from"] in ("gpt", "assistant"))
        turns = expand_view_placeholders([{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
                                         cfg.data)
        scored = tokenize_conversation(turns, tokenizer, cfg.model.llm.template, tokens, cfg.model.llm.max_length)
        train_prompt = ex.input_ids[:_prompt_end(ex.labels)]
        assert scored["input_ids"][:_prompt_end(scored["labels"])] == train_prompt, ex.id


def _ego_annotations(ws, n: int = 4) -> dict:
    v = _videos(ws)
    return {"annotations": [
        {"take_uid": f"take{i}", "take_name": f"upenn_{i}", "scenario_name": ["Basketball", "Dance"][i % 2],
         "proficiency_score": LEVELS[i % 4], "video_paths": {"ego": v[i], "exo1": v[i + 1], "exo2": v[i + 2]}}
        for i in range(n)]}


def test_registry_names_every_format() -> None:
    assert set(CONVERTERS) == {"egoexo4d-proficiency", "egoexo4d-tips", "finediving", "mtl-aqa", "captions",
                               "llava", "mvbench", "pandagpt", "minigpt4-align", "video-chatgpt", "llava-pretrain",
                               "nextgpt-tx2t", "nextgpt-t2xt", "nextgpt-mosit"}


def test_egoexo4d_proficiency_keeps_views_scenario_label(tiny_workspace, tmp_path, capsys) -> None:
    src = tmp_path / "proficiency_demonstrator_train.json"
    src.write_text(json.dumps(_ego_annotations(tiny_workspace)))
    out = tmp_path / "out" / "train.json"
    code, stdout, err = _prepare(capsys, "egoexo4d-proficiency", src, out, "--media-root", str(tiny_workspace.data),
                                 "--views", "exo1,ego")
    assert code == 0, err
    assert "4 sample(s) written" in stdout
    samples = json.loads(out.read_text())
    first = samples[0]
    assert first["id"] == "take0" and first["label"] == "Novice" and first["scenario"] == "Basketball"
    assert list(first["video"]) == ["exo1", "ego"]  # the requested views, in that order
    assert first["conversations"][0]["value"].startswith("<video>\n")
    assert first["conversations"][1] == {"from": "gpt", "value": "Novice"}
    ds = _load_and_validate(tiny_workspace, out, 2, "data.views=[exo1,ego]", "model.projector.name=view_fusion")
    assert len(ds) == 4


def test_egoexo4d_missing_view_and_unknown_label_are_named(tiny_workspace, tmp_path, capsys) -> None:
    data = _ego_annotations(tiny_workspace)
    del data["annotations"][2]["video_paths"]["exo2"]
    src = tmp_path / "prof.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "train.json"
    args = ("--media-root", str(tiny_workspace.data), "--views", "ego,exo1,exo2")
    code, _, err = _prepare(capsys, "egoexo4d-proficiency", src, out, *args)
    assert code == 2 and not out.exists()
    assert str(src) in err and "take_uid take2" in err and "video_paths.exo2" in err and "--skip-incomplete" in err

    code, stdout, err = _prepare(capsys, "egoexo4d-proficiency", src, out, *args, "--skip-incomplete")
    assert code == 0, err
    assert "3 sample(s) written" in stdout and "skipped 1" in stdout and "take2" in stdout and "exo2" in stdout
    assert [s["id"] for s in json.loads(out.read_text())] == ["take0", "take1", "take3"]

    data["annotations"][1]["proficiency_score"] = "Grandmaster"
    src.write_text(json.dumps(data))
    code, _, err = _prepare(capsys, "egoexo4d-proficiency", src, out, *args, "--skip-incomplete")
    assert code == 2 and str(src) in err and "entry 1 (take_uid take1)" in err and "'proficiency_score'" in err
    assert "Grandmaster" in err


def test_egoexo4d_tips_feedback_with_timestamps(tiny_workspace, tmp_path, capsys) -> None:
    data = _ego_annotations(tiny_workspace, 2)
    data["annotations"][0].update(
        good_executions=[{"text": "Eyes up while dribbling.", "timestamp": 3.25}, "Smooth rhythm."],
        tips_for_improvement=[{"text": "Keep the elbow in.", "timestamp": 12.5}, {"text": "Finish the move."}])
    data["annotations"][1].update(tips_for_improvement=[{"text": "Bend the knees.", "timestamp": 4}])
    del data["annotations"][1]["proficiency_score"]
    src = tmp_path / "commentary.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "tips.json"
    code, stdout, err = _prepare(capsys, "egoexo4d-tips", src, out, "--media-root", str(tiny_workspace.data),
                                 "--views", "ego", "--single-view")
    assert code == 0, err
    assert "skipped 1: 1 no good_executions" in stdout
    by_id = {s["id"]: s for s in json.loads(out.read_text())}
    assert set(by_id) == {"take0_tips", "take0_good", "take1_tips"}
    tips = by_id["take0_tips"]
    assert isinstance(tips["video"], str) and tips["label"] == "Novice" and "label" not in by_id["take1_tips"]
    assert tips["conversations"][0]["value"] == "<video>\nWhat should this athlete improve?"
    assert tips["conversations"][1]["value"] == "at 12.5 s: Keep the elbow in.\nFinish the move."
    assert by_id["take0_good"]["conversations"][1]["value"] == "at 3.25 s: Eyes up while dribbling.\nSmooth rhythm."
    assert by_id["take1_tips"]["conversations"][1]["value"] == "at 4.0 s: Bend the knees."
    _load_and_validate(tiny_workspace, out)

    code, _, err = _prepare(capsys, "egoexo4d-tips", src, tmp_path / "mt.json", "--media-root",
                            str(tiny_workspace.data), "--multi-turn")
    assert code == 0, err
    take0 = json.loads((tmp_path / "mt.json").read_text())[0]
    assert take0["id"] == "take0" and [t["from"] for t in take0["conversations"]] == ["human", "gpt"] * 2
    assert take0["conversations"][-1]["value"].startswith("at 12.5 s")  # the tips are the feedback reference


def test_finediving_json_with_split_file(tiny_workspace, tmp_path, capsys) -> None:
    media = tmp_path / "clips"
    media.mkdir()
    for i, v in enumerate(_videos(tiny_workspace)[:3]):
        shutil.copy(tiny_workspace.data / v, media / f"dive{i}.mp4")
    src = tmp_path / "fine-grained_annotation.json"
    src.write_text(json.dumps({f"dive{i}": {"dive_score": s, "difficulty": d, "judge_scores": [7.0, 7.5]}
                               for i, (s, d) in enumerate([(78.4, 3.0), (55.25, 2.8), (90.0, 3.4)])}))
    split = tmp_path / "train_split.txt"
    split.write_text("dive2\ndive0\n")
    out = tmp_path / "fd.json"
    code, _, err = _prepare(capsys, "finediving", src, out, "--media-root", str(media), "--split-file", str(split))
    assert code == 0, err
    samples = json.loads(out.read_text())
    assert [s["id"] for s in samples] == ["dive2", "dive0"]
    assert samples[1]["score"] == 78.4 and samples[1]["difficulty"] == 3.0
    assert samples[1]["conversations"][1]["value"] == "Score: 78.40 (difficulty 3.0)."
    _load_and_validate(tiny_workspace, out, 2, "eval.task=score", "eval.split=train")

    src.write_text(json.dumps({"dive0": {"dive_score": "good", "difficulty": 3.0}}))
    code, _, err = _prepare(capsys, "finediving", src, out, "--media-root", str(media))
    assert code == 2 and str(src) in err and "video_id dive0" in err and "'dive_score'" in err


def test_mtl_aqa_pickle_with_tuple_keys(tiny_workspace, tmp_path, capsys) -> None:
    np = pytest.importorskip("numpy")
    media = tmp_path / "videos"
    media.mkdir()
    for i, v in enumerate(_videos(tiny_workspace)[:2]):
        shutil.copy(tiny_workspace.data / v, media / f"{1:02d}_{i + 1:02d}.mp4")
    annotations = {(1, i + 1): {"final_score": np.float64(s), "difficulty": np.float32(3.0), "position": "pike"}
                   for i, s in enumerate([66.0, 84.15])}
    src = tmp_path / "final_annotations_dict.pkl"
    src.write_bytes(pickle.dumps(annotations))
    (tmp_path / "test_split_0.pkl").write_bytes(pickle.dumps([(1, 2)]))
    out = tmp_path / "mtl.json"
    code, _, err = _prepare(capsys, "mtl-aqa", src, out, "--media-root", str(media), "--video-pattern",
                            "{0:02d}_{1:02d}.mp4", "--split-file", str(tmp_path / "test_split_0.pkl"))
    assert code == 0, err
    (sample,) = json.loads(out.read_text())
    assert sample["id"] == "1_2" and sample["video"].endswith("01_02.mp4") and sample["score"] == 84.15
    assert sample["conversations"][1]["value"] == "Score: 84.15 (difficulty 3.0)."
    _load_and_validate(tiny_workspace, out)


def test_pickles_that_would_run_code_are_refused(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(ConversionError, match="refusing to load builtins.print"):
        read_structured(bad)


def test_captions_json_and_webvid_csv(tiny_workspace, tmp_path, capsys) -> None:
    v = _videos(tiny_workspace)
    src = tmp_path / "captions.json"
    src.write_text(json.dumps([{"video": v[0], "caption": "A dribble drill."},
                               {"id": "c1", "video": v[1], "caption": " Another drill. "}]))
    out = tmp_path / "cap.json"
    code, _, err = _prepare(capsys, "captions", src, out, "--media-root", str(tiny_workspace.data))
    assert code == 0, err
    samples = json.loads(out.read_text())
    assert samples[0]["id"] == "captions_0" and samples[1] == {**samples[1], "id": "c1", "caption": "Another drill."}
    assert "conversations" not in samples[0]
    _load_and_validate(tiny_workspace, out, 1)

    csv = tmp_path / "results_2M_val.csv"
    stems = [Path(p).stem for p in v[:2]]
    csv.write_text("videoid,contentUrl,duration,page_dir,name\n"
                   + "".join(f"{s},https://example.invalid/{s}.mp4,PT00H00M09S,train,clip {s}\n" for s in stems))
    code, _, err = _prepare(capsys, "captions", csv, tmp_path / "wv.json", "--media-root",
                            str(tiny_workspace.data / "videos"), "--video-pattern", "{page_dir}/{videoid}.mp4")
    assert code == 0, err
    wv = json.loads((tmp_path / "wv.json").read_text())
    assert [s["id"] for s in wv] == stems and wv[0]["caption"] == f"clip {stems[0]}"
    _load_and_validate(tiny_workspace, tmp_path / "wv.json", 1)


def test_image_captions_need_conversation_output(tiny_workspace, tmp_path, capsys) -> None:
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 20, 20)).save(tmp_path / "red.png")
    src = tmp_path / "cc3m.json"
    src.write_text(json.dumps([{"image": "red.png", "caption": "A red square."}]))
    code, _, err = _prepare(capsys, "captions", src, tmp_path / "cc.json")
    assert code == 2 and "entry 0" in err and "'image'" in err and "--as conversation" in err
    code, _, err = _prepare(capsys, "captions", src, tmp_path / "cc.json", "--as", "conversation")
    assert code == 0, err
    (sample,) = json.loads((tmp_path / "cc.json").read_text())
    assert sample["image"] == "red.png" and sample["conversations"][0]["value"].startswith("<image>")
    _load_and_validate(tiny_workspace, tmp_path / "cc.json")


def test_llava_and_videochat_get_placeholders(tiny_workspace, tmp_path, capsys) -> None:
    v = _videos(tiny_workspace)
    src = tmp_path / "instruct.json"
    src.write_text(json.dumps([
        {"id": "next", "video": v[0], "conversations": [{"from": "human", "value": "<image>\nWhat sport is this?"},
                                                        {"from": "gpt", "value": "Basketball."}]},
        {"id": "vcgpt", "video": v[1], "conversations": [{"from": "human", "value": "Describe the drill."},
                                                         {"from": "gpt", "value": "Dribbling on a beat."},
                                                         {"from": "human", "value": "Any mistakes?"},
                                                         {"from": "gpt", "value": "Two hesitations."}]},
        {"video": v[2], "QA": [{"i": "Watch the whole clip.", "q": "How many beats?", "a": "Eight."}]},
    ]))
    out = tmp_path / "llava_out.json"
    code, stdout, err = _prepare(capsys, "llava", src, out, "--media-root", str(tiny_workspace.data))
    assert code == 0, err
    assert "renamed <video>" in stdout and "2 <video> placeholders inserted" in stdout
    samples = json.loads(out.read_text())
    assert samples[0]["conversations"][0]["value"] == "<video>\nWhat sport is this?"
    assert samples[1]["conversations"][0]["value"] == "<video>\nDescribe the drill."
    assert samples[2]["id"] == "instruct_2"
    assert samples[2]["conversations"][0]["value"] == "<video>\nWatch the whole clip.\nHow many beats?"
    _load_and_validate(tiny_workspace, out)

    src.write_text(json.dumps([{"id": "bad", "video": v[0], "conversations": [
        {"from": "human", "value": "<video><video> Two?"}, {"from": "gpt", "value": "One."}]}]))
    code, _, err = _prepare(capsys, "llava", src, out)
    assert code == 2 and "entry 0 (id bad)" in err and "'conversations'" in err and "2 <video>" in err


def test_mvbench_options_and_answer(tiny_workspace, tmp_path, capsys) -> None:
    v = _videos(tiny_workspace)
    src = tmp_path / "action_sequence.json"
    src.write_text(json.dumps([{"video": v[0], "question": "What did the person do first?",
                                "candidates": ["Sat down.", "Dribbled the ball.", "Jumped."],
                                "answer": "Dribbled the ball."}]))
    out = tmp_path / "mvb.json"
    code, _, err = _prepare(capsys, "mvbench", src, out, "--media-root", str(tiny_workspace.data))
    assert code == 0, err
    (s,) = json.loads(out.read_text())
    assert s["conversations"][0]["value"] == ("<video>\nQuestion: What did the person do first?\nOptions:\n"
                                              "(A) Sat down.\n(B) Dribbled the ball.\n(C) Jumped.\n"
                                              "Answer with the option's letter.")
    assert s["conversations"][1]["value"] == "(B) Dribbled the ball."
    assert s["candidates"] == ["Sat down.", "Dribbled the ball.", "Jumped."] and s["answer"] == "Dribbled the ball."
    _load_and_validate(tiny_workspace, out, 2, "eval.task=multiple_choice", "eval.split=train")

    src.write_text(json.dumps([{"video": v[0], "question": "Q?", "candidates": ["a", "b"], "answer": "c"}]))
    code, _, err = _prepare(capsys, "mvbench", src, out)
    assert code == 2 and str(src) in err and "entry 0" in err and "'answer'" in err


RAMP_BASE, RAMP_STEP, RAMP_FPS = 5, 6, 10  # frame i is flat grey RAMP_BASE + RAMP_STEP * i: time in the pixels


def _ramp_video(path: Path, frames: int = 40) -> Path:
    """A lossless H.264 clip whose brightness encodes the frame index (RAMP_FPS frames a second)."""
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=RAMP_FPS)
        stream.height, stream.width, stream.pix_fmt, stream.options = 32, 32, "yuv420p", {"crf": "0"}
        for i in range(frames):
            img = np.full((32, 32, 3), RAMP_BASE + RAMP_STEP * i, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode())
    return path


def _ramp_frames(pixels) -> set[int]:
    """The frame indices a raw (mean 0, std 1) clip tensor [N, C, T, H, W] holds."""
    values = pixels.mean(dim=(1, 3, 4)) * 255.0
    return set(((values - RAMP_BASE) / RAMP_STEP).round().long().flatten().tolist())


def test_mvbench_segment_is_sampled_inside_start_end_and_cached_apart(tmp_path, capsys) -> None:
    from skillgpt.config.schema import DataConfig, VideoConfig
    from skillgpt.data.cached_features import item_key
    from skillgpt.data.feature_cache import FeatureCache
    from skillgpt.data.media import MediaError, MediaItem, load_media, sample_media

    _ramp_video(tmp_path / "ramp.mp4")  # 4 s
    entry = {"video": "ramp.mp4", "question": "What happens?", "candidates": ["a", "b"], "answer": "a"}
    src = tmp_path / "segments.json"
    src.write_text(json.dumps([{**entry, "start": 1, "end": 2.5}, entry]))
    out = tmp_path / "out" / "mvb.json"
    code, _, err = _prepare(capsys, "mvbench", src, out)
    assert code == 0, err
    with_segment, whole = json.loads(out.read_text())
    assert (with_segment["start"], with_segment["end"]) == (1.0, 2.5) and "start" not in whole

    cfg = DataConfig(train=None, video=VideoConfig(num_clips=3, frames_per_clip=4, resolution=16,
                                                   mean=[0.0] * 3, std=[1.0] * 3))
    (seg_item,) = sample_media(with_segment, out.parent, cfg, "mvb.json: sample 0")
    (whole_item,) = sample_media(whole, out.parent, cfg, "mvb.json: sample 1")
    assert seg_item.segment == (1.0, 2.5) and whole_item.segment is None
    inside = _ramp_frames(load_media(seg_item, cfg))
    assert inside and min(inside) >= 10 and max(inside) < 25  # [ceil(10 * 1), ceil(10 * 2.5)) only
    assert min(_ramp_frames(load_media(whole_item, cfg))) < 10  # the whole video reaches outside it
    cache = FeatureCache(tmp_path / "cache", {"test": 1})
    assert item_key(cache, seg_item.paths[0], seg_item) != item_key(cache, whole_item.paths[0], whole_item)
    past = MediaItem("video", seg_item.paths, segment=(10.0, 12.0))
    with pytest.raises(MediaError, match=r"ramp.mp4: segment starts at 10.0s, at or after the video's end"):
        load_media(past, cfg)


def test_mvbench_bad_segment_is_named_by_entry_and_field(tmp_path, capsys) -> None:
    from skillgpt.config.schema import DataConfig
    from skillgpt.data.checks import check_sample

    base = {"video": "v.mp4", "question": "Q?", "candidates": ["a", "b"], "answer": "a"}
    src = tmp_path / "bad.json"
    src.write_text(json.dumps([{**base, "start": 3, "end": 1}, {**base, "start": "0:01", "end": 2},
                               {**base, "start": 1}, {**base, "start": -1, "end": 2}]))
    code, _, err = _prepare(capsys, "mvbench", src, tmp_path / "o.json")
    assert code == 2 and "4 problem(s)" in err
    assert "entry 0: field 'end': (1.0) must be greater than 'start' (3.0)" in err
    assert "entry 1: field 'start': must be a number of seconds, got '0:01'" in err
    assert "entry 2: field 'end': missing" in err and "entry 3: field 'start': must be >= 0" in err
    turns = [{"from": "human", "value": "<video> Q?"}, {"from": "gpt", "value": "a"}]
    checked = check_sample({"id": "s7", "video": "v.mp4", "start": 2, "end": 2, "conversations": turns}, 0,
                           DataConfig(train=None), "data.json", tmp_path)
    assert [str(p) for p in checked.errors] == ["data.json: sample s7: field 'end': (2.0) must be greater than "
                                                "'start' (2.0)"]


def test_options_a_format_does_not_take_are_refused(tmp_path) -> None:
    src = tmp_path / "fd.json"
    src.write_text("{}")
    with pytest.raises(ConversionError, match="--views does not apply"):
        prepare_data("finediving", src, tmp_path / "o.json", views="ego")
