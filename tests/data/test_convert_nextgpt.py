"""`skillgpt prepare-data nextgpt-tx2t | nextgpt-t2xt | nextgpt-mosit`: NExT-GPT's data files (fixtures in
tests/fixtures/nextgpt/data, written in the shapes its readers take, see the README there) -> SkillGPT samples; the
generating ones carry `generate` and one consecutive run of the modality's signal tokens; bad entries are named."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from skillgpt.data.convert import CONVERTERS, prepare_data
from skillgpt.data.convert._common import ConversionError
from skillgpt.data.convert.nextgpt import parse_signal_tokens, signal_text
from skillgpt.data.dataset import read_samples

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "nextgpt" / "data"
VICUNA = Path(__file__).resolve().parents[1] / "fixtures" / "pandagpt" / "vicuna-tiny"
IMG = "[IMG0][IMG1][IMG2][IMG3]"
AUD = "".join(f"[AUD{i}]" for i in range(8))
VID = "".join(f"[VID{i}]" for i in range(24))


def _convert(fmt: str, name: str, tmp_path: Path, **options) -> list[dict]:
    out = tmp_path / f"{fmt}-{name}"
    prepare_data(fmt, DATA / name, out, media_root=DATA, **options)
    return read_samples(out)


def _turns(sample: dict) -> list[str]:
    return [t["value"] for t in sample["conversations"]]


def test_registered() -> None:
    assert {"nextgpt-tx2t", "nextgpt-t2xt", "nextgpt-mosit"} <= set(CONVERTERS)


def test_signal_text_is_skillgpts() -> None:
    from skillgpt.models.signal_tokens import NEXTGPT_COUNTS, signal_token_names

    names = signal_token_names(NEXTGPT_COUNTS)
    assert {m: signal_text(m, parse_signal_tokens(None)) for m in names} == {m: "".join(t) for m, t in names.items()}
    assert parse_signal_tokens("image=2")["image"] == 2 and parse_signal_tokens("image=2")["video"] == 24
    with pytest.raises(ConversionError, match="--signal-tokens"):
        parse_signal_tokens("pictures=3")


def test_tx2t_pair_data(tmp_path: Path) -> None:
    cc3m = _convert("nextgpt-tx2t", "cc3m.json", tmp_path)
    assert [s["id"] for s in cc3m] == ["001315729", "001314004"]
    assert _turns(cc3m[1]) == ["<image>", "windows on an old wooden country house"]  # NExT-GPT's process_caption
    assert (tmp_path / cc3m[0]["image"]).resolve() == (DATA / "001315729.jpg").resolve()
    audio = _convert("nextgpt-tx2t", "audiocap.json", tmp_path, question="What do you hear?")
    assert audio[0]["id"] == "106158" and audio[0]["audio"].endswith("106158.wav")
    assert _turns(audio[0]) == ["<audio>\nWhat do you hear?", "a train running and then a horn honking"]


def test_tx2t_comprehension_and_legacy_instructions(tmp_path: Path) -> None:
    webvid = _convert("nextgpt-tx2t", "webvid_comprehension.json", tmp_path)
    assert webvid[1]["id"] == "webvid_comprehension_1" and len(webvid[1]["video"]) == 2
    assert _turns(webvid[1])[2] == "And this one? <video>"
    llava = _convert("nextgpt-tx2t", "llava.json", tmp_path)
    assert llava[0]["image"].endswith("000000033471.jpg")
    assert _turns(llava[0])[0] == "<image>\nWhat are the colors of the bus in the image?"
    assert "image" not in llava[1] and _turns(llava[1])[0] == "Give three tips for staying healthy."
    assert all("generate" not in s for s in webvid + llava)


def test_t2xt_legacy_current_and_stage2_pairs(tmp_path: Path) -> None:
    legacy = _convert("nextgpt-t2xt", "image_t2x.json", tmp_path)
    assert _turns(legacy[1])[3] == f"Sure, this is the image you want. {IMG}"
    assert legacy[1]["generate"] == {"modality": "image", "caption": "a bowl of oatmeal with berries"}
    audio = _convert("nextgpt-t2xt", "audio_instruction_tuning.json", tmp_path)
    assert _turns(audio[0])[1] == f"Absolutely! I have just the audio clip you need. {AUD}"
    assert audio[0]["generate"]["modality"] == "audio"
    gen = _convert("nextgpt-t2xt", "cc3m_generation.json", tmp_path, signal_tokens="image=2")
    assert _turns(gen[0])[1] == "Sure thing! [IMG0][IMG1]"
    assert gen[1]["generate"] == {"modality": "image", "caption": "players wait for a conversion"}
    pairs = _convert("nextgpt-t2xt", "cc3m.json", tmp_path)  # NExT-GPT stage 2: the caption asks and is repeated
    assert _turns(pairs[0]) == ["rugby player during the match.", f"rugby player during the match. {IMG}"]
    assert pairs[0]["generate"]["caption"] == "Rugby player during the match." and "image" not in pairs[0]


def test_mosit_raw_one_sample_per_generated_item(tmp_path: Path) -> None:
    samples = _convert("nextgpt-mosit", "mosit.json", tmp_path)
    assert [s["id"] for s in samples] == ["mosit_0_0", "mosit_0_1", "mosit_0_2", "mosit_1"]
    assert [s["generate"]["caption"] for s in samples] == [
        "An image of dark storm clouds", "A video of rain falling on a window", "An image of a rainbow over wet streets",
        "A cute cat paw on a pet shop logo"]
    first, video, second, logo = samples
    assert first["audio"].endswith("mosit_a_0000000_00.wav")  # a file in a human turn is an input
    assert _turns(first) == ["Hey, did you hear the thunderstorm last night? <audio>",
                             f"Oh, I heard it! The rumbling thunder made it feel like a movie scene. {IMG}"]
    assert _turns(video)[3] == f"Here you go: {VID} And after the storm: {IMG}"
    # the second image's sample: the first image is written without its signal tokens (one run per modality)
    assert _turns(second)[1] == "Oh, I heard it! The rumbling thunder made it feel like a movie scene."
    assert _turns(second)[3] == f"Here you go: {VID} And after the storm: {IMG}"
    # a tag holding a description (not a listed file) is removed, as NExT-GPT's preprocess_it_mosit does
    assert _turns(logo) == ["I need a logo for my pet shop.", f"How about like this? {IMG}"]


def test_mosit_preprocessed(tmp_path: Path) -> None:
    samples = _convert("nextgpt-mosit", "mosit_instruction_tuning.json", tmp_path)
    assert [s["generate"]["modality"] for s in samples] == ["image", "image", "audio"]
    assert _turns(samples[1])[3] == f"Like this: {IMG} {AUD}" and _turns(samples[1])[1] == "On a court like this one."
    assert samples[2]["generate"]["caption"] == "The squeak of sneakers on a court"


def test_generated_samples_hold_one_run_of_their_signal_tokens(tmp_path: Path) -> None:
    """Tokenized with SkillGPT's template and a tokenizer holding the signal tokens, each generating sample has
    exactly one consecutive run of its modality's tokens (what the stage-2 alignment needs)."""
    from transformers import AutoTokenizer

    from skillgpt.generation.alignment import signal_positions
    from skillgpt.data.templates import tokenize_conversation
    from skillgpt.models.signal_tokens import NEXTGPT_COUNTS, signal_token_names

    tokenizer = AutoTokenizer.from_pretrained(VICUNA)
    names = signal_token_names(NEXTGPT_COUNTS)
    tokenizer.add_tokens([t for tokens in names.values() for t in tokens])
    samples = (_convert("nextgpt-mosit", "mosit.json", tmp_path) + _convert("nextgpt-mosit", "mosit_instruction_tuning.json", tmp_path)
               + _convert("nextgpt-t2xt", "image_t2x.json", tmp_path))
    for s in samples:
        ids = tokenize_conversation(s["conversations"], tokenizer, "pandagpt", {"<image>": 1, "<video>": 1, "<audio>": 1},
                                    4096)["input_ids"]
        modality = s["generate"]["modality"]
        positions = signal_positions(torch.tensor([ids]), tokenizer.convert_tokens_to_ids(names[modality]))
        assert positions.shape == (1, NEXTGPT_COUNTS[modality]), s["id"]


@pytest.mark.parametrize("fmt,records,where", [
    ("nextgpt-tx2t", [{"image_name": "a.jpg"}], "entry 0: field 'conversations'"),
    ("nextgpt-tx2t", [{"image_name": "a.jpg", "caption": "ok"}, {"video_name": "b.mp4", "caption": ""}],
     "entry 1: field 'caption'"),
    ("nextgpt-tx2t", [{"conversations": [{"from": "human", "value": "draw"}, {"from": "gpt", "value": "ok <image>"}]}],
     "entry 0: field 'conversations': an assistant turn generates image"),
    ("nextgpt-tx2t", [{"input_image": ["a.jpg", "b.jpg"], "conversations": [
        {"from": "human", "value": "<image> what?"}, {"from": "gpt", "value": "a cat"}]}], "entry 0: field 'input_image'"),
    ("nextgpt-t2xt", [{"image_captions": ["one"], "conversations": [
        {"from": "human", "value": "two pictures"}, {"from": "gpt", "value": "<image> and <image>"}]}],
     "entry 0: field 'image_captions': 1 caption(s) but 2 <image>"),
    ("nextgpt-t2xt", [{"mm_name": "x.jpg", "conversation": [{"from": "human", "value": "q", "input_modality": "text"},
                                                            {"from": "gpt", "value": "a", "output_modality": "image"}]}],
     "entry 0: field 'conversation[1].caption'"),
    ("nextgpt-t2xt", [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}],
     "entry 0: field 'conversations': generates nothing"),
    ("nextgpt-mosit", [{"image_list": [], "conversation": [
        {"from": "human", "value": "show"}, {"from": "gpt", "value": "<Image>mosit_i_9.jpg</Image>"}]}],
     "entry 0: field 'conversation[1]': names image 'mosit_i_9.jpg', which is not in image_list"),
    ("nextgpt-mosit", [{"image_list": [{"image_name": "x.jpg"}], "conversation": [
        {"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}], "entry 0: field 'image_list[0]'"),
    ("nextgpt-mosit", [{"conversation": [{"from": "gpt", "value": "hi"}]}], "entry 0: field 'conversation[0]'"),
])
def test_bad_entries_name_file_entry_and_field(tmp_path: Path, fmt: str, records: list, where: str) -> None:
    src = tmp_path / "bad.json"
    src.write_text(json.dumps(records))
    with pytest.raises(ConversionError) as err:
        prepare_data(fmt, src, tmp_path / "out.json")
    assert f"{src}: {where}" in str(err.value), str(err.value)
    assert not (tmp_path / "out.json").exists()


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from skillgpt.cli import main

    out = tmp_path / "gen.json"
    code = main(["prepare-data", "nextgpt-t2xt", "--input", str(DATA / "cc3m_generation.json"), "--out", str(out),
                 "--signal-tokens", "image=3"])
    assert code == 0 and "2 sample(s) written" in capsys.readouterr().out
    assert read_samples(out)[0]["conversations"][1]["value"] == "Sure thing! [IMG0][IMG1][IMG2]"
    code = main(["prepare-data", "nextgpt-tx2t", "--input", str(DATA / "cc3m.json"), "--out", str(out),
                 "--signal-tokens", "image=3"])
    assert code == 2 and "--signal-tokens does not apply" in capsys.readouterr().err
