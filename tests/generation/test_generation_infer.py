"""Generation at inference: a model with signal tokens (tests/conftest.py `generation_checkpoint`) answers with
an image, a video and audio through `skillgpt infer`, the tiny random decoders (`tiny_decoders`) write them,
and the conditioning they get is the projected hidden states of the reply's signal tokens."""
from __future__ import annotations

import copy
import csv
import json
import wave
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from skillgpt.cli import build_parser, main
from skillgpt.inference.media import MediaMaker, SignalRunProcessor, check_media_request, signal_runs

pytest.importorskip("diffusers")

HEIGHT, WIDTH, FRAMES, FPS, SECONDS, RATE = 16, 24, 3, 6, 0.1, 16000
# "[IMG0]" is written by the script, "[IMG1]" by the model (a run is completed by the signal-run rule)
MEDIA_REPLY = ["Here", "[IMG0]", None, "[VID0]", None, "[AUD0]", None, "</s>"]
SIZES = [f"generation.decoders.image.height={HEIGHT}", f"generation.decoders.image.width={WIDTH}",
         f"generation.decoders.video.height={HEIGHT}", f"generation.decoders.video.width={WIDTH}",
         f"generation.decoders.video.num_frames={FRAMES}", f"generation.decoders.video.fps={FPS}",
         f"generation.decoders.audio.length_s={SECONDS}",
         *(f"generation.decoders.{m}.{k}=1" for m in ("image", "video", "audio") for k in ("steps", "guidance"))]


def decoder_flags(folders: dict[str, Path]) -> list[str]:
    return [arg for m in ("image", "video", "audio") for arg in (f"--{m}-decoder", str(folders[m]))]


@pytest.fixture(scope="module")
def assistant(generation_checkpoint, tiny_decoders, tmp_path_factory):
    from skillgpt.inference.assistant import SkillAssistant

    media_dir = tmp_path_factory.mktemp("media")
    paths = [f"generation.decoders.{m}.path={p}" for m, p in tiny_decoders.items()]
    return SkillAssistant(generation_checkpoint, device="cpu",
                          overrides=[f"generation.media_dir={media_dir}", *paths, *SIZES])


def test_infer_writes_the_replys_image_video_and_audio(generation_checkpoint, tiny_decoders, scripted_replies,
                                                       monkeypatch, tmp_path, capsys) -> None:
    import av
    from PIL import Image

    import skillgpt.inference.assistant as assistant_module
    import skillgpt.inference.media as media_module

    calls, seen = [], {}
    real_generate, real_conditioning = media_module.generate, assistant_module.reply_conditioning

    def recording_generate(pipe, modality, embeds, settings):
        calls.append((modality, embeds.detach().clone(), settings))
        return real_generate(pipe, modality, embeds, settings)

    def recording_conditioning(model, ids, media, reply_start):
        seen.update(model=model, ids=ids.clone(), media=media, start=reply_start)
        return real_conditioning(model, ids, media, reply_start)

    monkeypatch.setattr(media_module, "generate", recording_generate)
    monkeypatch.setattr(assistant_module, "reply_conditioning", recording_conditioning)
    scripted_replies(MEDIA_REPLY)
    media_dir = tmp_path / "media"
    sizes = [arg for s in SIZES if "steps" not in s and "guidance" not in s for arg in ("--set", s)]
    argv = ["infer", "--ckpt", str(generation_checkpoint), "--device", "cpu", "--max-new-tokens", "12",
            "--media-dir", str(media_dir), *decoder_flags(tiny_decoders), "--decoder-steps", "1", "--guidance", "1",
            *sizes,
            "Show the movement as a picture, a clip and a sound."]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "[IMG0]" in lines[0] and "[IMG1]" in lines[0] and "[AUD1]" in lines[0]
    paths = {m: Path(p) for m, p in (line.split(": ", 1) for line in lines[1:])}
    assert paths == {"image": media_dir / "answer-image.png", "video": media_dir / "answer-video.mp4",
                     "audio": media_dir / "answer-audio.wav"}

    with Image.open(paths["image"]) as image:
        assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
    with av.open(str(paths["video"])) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == FPS
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)
    with wave.open(str(paths["audio"]), "rb") as wav:
        assert wav.getframerate() == RATE and wav.getnframes() == int(SECONDS * RATE)

    # each decoder got the output projector of the LLM's last-layer states at its two signal tokens (with their
    # input embeddings), recomputed here from one plain forward pass over prompt + reply
    model, ids = seen["model"], seen["ids"]
    row = ids[0].tolist()
    with torch.no_grad():
        embeds = model.embed(ids, seen["media"])
        last = model.causal_lm(inputs_embeds=embeds, output_hidden_states=True).hidden_states[-1]
        assert [m for m, _, _ in calls] == ["image", "video", "audio"]
        for modality, given, settings in calls:
            first, second = model.generation.signal_ids[modality]
            at = row.index(first)
            assert at >= seen["start"] and row[at + 1] == second  # in the reply, the run completed
            direct = model.generation.projectors[modality][0](last[:, at:at + 2], embeds[:, at:at + 2])
            torch.testing.assert_close(given, direct, rtol=1e-5, atol=1e-5)
            assert (settings.steps, settings.guidance_scale, settings.seed) == (1, 1.0, 0)  # the flags, the default
    assert tuple(calls[0][1].shape) == (1, 77, 32) and tuple(calls[2][1].shape) == (1, 1, 16)


def test_replies_without_signal_tokens_are_text_only(assistant, scripted_replies) -> None:
    scripted_replies(["Fine", "timing", "</s>"])
    files: list = []
    text = assistant.ask("How is the timing?", None, files=files, max_new_tokens=6)
    assert files == [] and text == assistant.ask("How is the timing?", None, max_new_tokens=6)
    assert not any(assistant.media_maker.media_dir.iterdir())  # nothing written, no decoder loaded
    assert assistant.media_maker._pipes == {}


def test_a_missing_decoder_folder_names_its_key(assistant, scripted_replies, tmp_path) -> None:
    cfg = copy.deepcopy(assistant.cfg.generation)
    cfg.decoders.audio.path = None
    cfg.decoders.video.path = str(tmp_path / "nowhere")
    maker = MediaMaker(cfg, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"asks for audio but generation\.decoders\.audio\.path is not set.*"
                                         r"AudioLDMPipeline folder \(--audio-decoder PATH"):
        maker.render({"audio": torch.zeros(1, 1, 16)}, "x")
    with pytest.raises(FileNotFoundError, match=rf"generation\.decoders\.video\.path: {tmp_path / 'nowhere'}: "
                                                "decoder folder not found"):
        maker.render({"video": torch.zeros(1, 77, 16)}, "x")
    # through a reply that asks for audio
    assistant._media_maker, kept = maker, assistant._media_maker
    try:
        scripted_replies(["[AUD0]", None, "</s>"])
        with pytest.raises(ValueError, match=r"generation\.decoders\.audio\.path is not set"):
            assistant.ask("And the sound?", None, files=[], max_new_tokens=4)
    finally:
        assistant._media_maker = kept


def test_batch_rows_record_the_media(assistant, scripted_replies, tiny_workspace, tmp_path) -> None:
    from skillgpt.inference.batch import Clip, rate_clips, write_rows

    clip = sorted((tiny_workspace.data / "videos").rglob("*.mp4"))[0]
    scripted_replies(["[IMG0]", None, "</s>"])
    rows = list(rate_clips(assistant, [Clip(clip, "c0")], feedback_question=None, progress=False, max_new_tokens=4))
    assert rows[0]["error"] is None and "[IMG0][IMG1]" in rows[0]["answer"].replace(" ", "")
    assert rows[0]["media"] == [str(assistant.media_maker.media_dir / "c0-answer-image.png")]
    out = tmp_path / "rows.csv"
    assert write_rows(rows, out, list(assistant.cfg.eval.labels), media=True) == (1, 0)
    (written,) = list(csv.DictReader(out.open()))
    assert written["media"] == ";".join(rows[0]["media"])
    json.dumps(rows[0])  # a JSON line as it is


def test_chat_prints_the_paths_and_needs_no_clip(assistant, scripted_replies) -> None:
    import io

    from skillgpt.serve.chat import ChatShell

    scripted_replies(["Here", "[IMG0]", None, "</s>"])
    out = io.StringIO()
    assert ChatShell(assistant, stdin=io.StringIO("Show me a clean kip.\n"), stdout=out, max_new_tokens=6).run() == 0
    reply = out.getvalue().split("skillgpt> ")[1].splitlines()
    assert "[IMG0]" in reply[0] and reply[1] == f"  image: {assistant.media_maker.media_dir / 'chat-image.png'}"


def test_signal_runs_stay_whole() -> None:
    proc = SignalRunProcessor({"image": [10, 11, 12], "audio": [20, 21]})
    scores = torch.zeros(2, 30)
    out = proc(torch.tensor([[5, 10], [5, 7]]), scores)
    assert out[0].argmax() == 11 and torch.isinf(out[0]).sum() == 29  # after [IMG0] only [IMG1]
    assert torch.isinf(out[1, [11, 12, 21]]).all() and torch.isfinite(out[1, [10, 20, 7]]).all()
    assert proc(torch.zeros(2, 0, dtype=torch.long), scores)[0, 10] == 0  # first step: nothing forced
    assert signal_runs([1, 10, 11, 12, 3, 10, 11], [10, 11, 12]) == ([1], 1)  # the second run was cut short
    assert signal_runs([10, 11, 12, 10, 11, 12], [10, 11, 12], start=2) == ([3], 0)


def test_media_settings_without_signal_tokens_are_refused(tiny_workspace) -> None:
    from skillgpt.config import ConfigError
    from skillgpt.inference.inputs import media_overrides

    args = build_parser("infer").parse_args(["infer", "--ckpt", "x", "--image-decoder", "sd", "--guidance", "3",
                                      "--set", "generation.decoders.video.fps=4", "q"])
    overrides, flags = media_overrides(args)
    assert flags == ["--image-decoder", "--guidance", "--set generation.decoders.video.fps"]
    assert f"generation.decoders.image.path={json.dumps(str(Path('sd').absolute()))}" in overrides
    assert "generation.decoders.audio.guidance=3.0" in overrides
    with pytest.raises(ValueError, match=r"^--image-decoder, --guidance.*cannot generate images, videos or audio"):
        check_media_request(SimpleNamespace(generation=None), flags)
    check_media_request(SimpleNamespace(generation=None), [])  # nothing asked: fine
    check_media_request(SimpleNamespace(generation=object()), flags)
    # the config section: typed, unknown keys and bad values refused
    cfg = tiny_workspace.config(2, "cfg", "generation.decoders.video.num_frames=5", "generation.dtype=float16")
    assert (cfg.generation.decoders.video.num_frames, cfg.generation.dtype) == (5, "float16")
    with pytest.raises(ConfigError, match=r"generation\.decoders\.image\.frames: unknown key"):
        tiny_workspace.config(2, "cfg", "generation.decoders.image.frames=5")
    with pytest.raises(ConfigError, match=r"generation\.decoders\.audio\.steps: must be >= 1"):
        tiny_workspace.config(2, "cfg", "generation.decoders.audio.steps=0")
