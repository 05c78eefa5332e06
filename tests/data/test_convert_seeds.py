"""`skillgpt prepare-data` for the ancestors' training files (PandaGPT, MiniGPT-4, Video-ChatGPT, LLaVA
pretraining): each public shape converts into samples that `data validate` passes; bad entries are named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from skillgpt.data.convert import prepare_data
from skillgpt.data.convert._common import ConversionError
from skillgpt.data.dataset import read_samples
from skillgpt.data.validate import validate_config
from skillgpt.models.build import build_model
from skillgpt.models.llm import load_tokenizer


def _image(path: Path, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), colour).save(path)


def _validate(ws, out: Path) -> None:
    cfg = ws.config(2, "seeds", f"data.train={out}", "data.val=null", "data.test=null", "train.init_from=null")
    model, _ = build_model(cfg, on_meta=True)
    report = validate_config(cfg, ["train"], tokenizer=load_tokenizer(cfg.model.llm.path),
                             placeholder_tokens=model.placeholder_tokens(), use_cache=False, progress=False)
    assert report.ok, report.format()
    assert report.splits[0].samples == len(read_samples(out))


def test_pandagpt_instruction_data(tiny_workspace, tmp_path: Path) -> None:
    _image(tmp_path / "images" / "000000.jpg", (200, 30, 30))
    _image(tmp_path / "images" / "000001.jpg", (30, 200, 30))
    src = tmp_path / "pandagpt4_visual_instruction_data.json"
    src.write_text(json.dumps([
        {"image_name": "000000.jpg", "conversation": [
            {"from": "human", "value": "What is shown?"}, {"from": "gpt", "value": "A red card."},
            {"from": "human", "value": "Is it bright?"}, {"from": "gpt", "value": "Yes."}]},
        {"image_name": "000001.jpg", "conversation": [
            {"from": "human", "value": "Colour?"}, {"from": "gpt", "value": "Green."}]}]))
    out = tmp_path / "out" / "pandagpt.json"
    prepare_data("pandagpt", src, out, media_root=tmp_path / "images")
    samples = read_samples(out)
    assert samples[0]["conversations"][0]["value"] == "<image>\nWhat is shown?"
    assert samples[0]["conversations"][2]["value"] == "Is it bright?"
    assert (out.parent / samples[0]["image"]).resolve() == (tmp_path / "images" / "000000.jpg").resolve()
    _validate(tiny_workspace, out)


def test_minigpt4_cc_sbu_align(tiny_workspace, tmp_path: Path) -> None:
    root = tmp_path / "cc_sbu_align"
    _image(root / "image" / "2.jpg", (10, 10, 220))
    _image(root / "image" / "7.jpg", (220, 220, 10))
    src = root / "filter_cap.json"
    src.write_text(json.dumps({"annotations": [{"image_id": "2", "caption": "A blue square on a page."},
                                               {"image_id": "7", "caption": "A yellow field."}]}))
    out = tmp_path / "minigpt4.json"
    prepare_data("minigpt4-align", src, out)
    samples = read_samples(out)
    assert samples[0]["image"] == "cc_sbu_align/image/2.jpg"
    assert samples[0]["conversations"] == [{"from": "human", "value": "<image>\nDescribe this image in detail."},
                                           {"from": "gpt", "value": "A blue square on a page."}]
    _validate(tiny_workspace, out)


def test_video_chatgpt_raw(tiny_workspace, tmp_path: Path) -> None:
    videos = sorted((tiny_workspace.data / "videos" / "train").glob("*.mp4"))[:2]
    src = tmp_path / "VideoInstruct_100K.json"
    src.write_text(json.dumps([{"video_id": v.stem, "q": "What does the athlete do?", "a": "A routine."} for v in videos]
                              + [{"video_id": videos[0].stem, "q": "How well?", "a": "Fairly well."}]))
    out = tmp_path / "vcg.json"
    prepare_data("video-chatgpt", src, out, media_root=videos[0].parent)
    samples = read_samples(out)
    assert len(samples) == 3 and samples[2]["conversations"][0]["value"] == "<video>\nHow well?"
    _validate(tiny_workspace, out)
    src.write_text(json.dumps([{"video_id": "x", "q": "?"}]))
    with pytest.raises(ConversionError, match=r"entry 0: field 'a'"):
        prepare_data("video-chatgpt", src, tmp_path / "bad.json")


def test_llava_pretrain_moves_the_image_first(tiny_workspace, tmp_path: Path) -> None:
    _image(tmp_path / "00453" / "004539375.jpg", (90, 90, 90))
    _image(tmp_path / "00223" / "002239345.jpg", (190, 90, 20))
    src = tmp_path / "blip_laion_cc_sbu_558k.json"
    src.write_text(json.dumps([
        {"id": "004539375", "image": "00453/004539375.jpg", "conversations": [
            {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"}]},
        {"id": "002239345", "image": "00223/002239345.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
            {"from": "gpt", "value": "a grey watercolor painting"}]}]))
    out = tmp_path / "pretrain.json"
    prepare_data("llava-pretrain", src, out)
    samples = read_samples(out)
    assert samples[0]["conversations"][0]["value"] == "<image>\nRender a clear and concise summary of the photo."
    assert samples[1]["conversations"][0]["value"] == "<image>\nWrite a terse but informative summary of the picture."
    _validate(tiny_workspace, out)


def test_pandagpt_bad_entries_are_named(tmp_path: Path) -> None:
    src = tmp_path / "bad.json"
    src.write_text(json.dumps([{"image_name": "a.jpg", "conversation": [{"from": "gpt", "value": "hi"}]},
                               {"conversation": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]))
    with pytest.raises(ConversionError) as err:
        prepare_data("pandagpt", src, tmp_path / "out.json")
    assert "entry 0: field 'conversation'" in str(err.value) and "entry 1: field 'image_name'" in str(err.value)
