"""Frozen decoders (skillgpt.generation.decoders): tiny random Stable Diffusion, text-to-video and AudioLDM
pipelines (built in tests/conftest.py, `tiny_decoders`), saved with save_pretrained, loaded back through `load_decoder`, run from random
conditioning and written to .png / .mp4 / .wav files that are read back and checked."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from skillgpt.generation.decoders import (
    DecoderSettings, conditioning_shape, generate, load_decoder, write_output,
)

HEIGHT, WIDTH, FRAMES, FPS = 16, 24, 3, 6
AUDIO_SECONDS, SAMPLE_RATE = 0.1, 16000
FAST = {"steps": 2, "seed": 3}


@pytest.fixture(scope="module")
def folders(tiny_decoders: dict[str, Path]) -> dict[str, Path]:
    """One saved tiny pipeline folder per modality (tests/conftest.py builds them once per session)."""
    return tiny_decoders


@pytest.fixture(scope="module")
def pipes(folders: dict[str, Path]) -> dict:
    """The folders loaded back through load_decoder (CPU, float32), progress bars off."""
    loaded = {}
    for modality, folder in folders.items():
        loaded[modality] = load_decoder(folder, modality, torch.float32, "cpu")
        loaded[modality].set_progress_bar_config(disable=True)
    return loaded


def _embeds(pipe, modality: str, batch: int = 1, seed: int = 0) -> torch.Tensor:
    tokens, width = conditioning_shape(pipe, modality)
    return torch.randn(batch, tokens, width, generator=torch.Generator().manual_seed(seed))


def test_conditioning_shapes(pipes: dict) -> None:
    assert conditioning_shape(pipes["image"], "image") == (77, 32)
    assert conditioning_shape(pipes["video"], "video") == (77, 16)
    assert conditioning_shape(pipes["audio"], "audio") == (1, 16)


def test_image_png_has_configured_size(pipes: dict, tmp_path: Path) -> None:
    settings = DecoderSettings.for_modality("image", height=HEIGHT, width=WIDTH, **FAST)
    outputs = generate(pipes["image"], "image", _embeds(pipes["image"], "image", batch=2), settings)
    assert len(outputs) == 2
    paths = [write_output(o, "image", tmp_path / f"img_{i}") for i, o in enumerate(outputs)]
    assert [p.name for p in paths] == ["img_0.png", "img_1.png"]
    with Image.open(paths[0]) as image:
        assert image.format == "PNG" and image.size == (WIDTH, HEIGHT) and image.mode == "RGB"


def test_video_mp4_decodes_with_configured_frames_and_size(pipes: dict, tmp_path: Path) -> None:
    import av

    settings = DecoderSettings.for_modality("video", height=HEIGHT, width=WIDTH, num_frames=FRAMES, fps=FPS,
                                            **FAST)
    (output,) = generate(pipes["video"], "video", _embeds(pipes["video"], "video"), settings)
    assert output.data.shape == (FRAMES, HEIGHT, WIDTH, 3) and output.data.dtype == np.uint8
    path = write_output(output, "video", tmp_path / "clip")
    assert path.suffix == ".mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        assert stream.average_rate == FPS
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == FRAMES and frames[0].shape == (HEIGHT, WIDTH, 3)


def test_audio_wav_has_configured_length_and_rate(pipes: dict, tmp_path: Path) -> None:
    settings = DecoderSettings.for_modality("audio", audio_length_in_s=AUDIO_SECONDS, **FAST)
    pipe = pipes["audio"]
    # NExT-GPT's audio projector emits one token; [B, 1, W] and [B, W] are both accepted.
    (output,) = generate(pipe, "audio", _embeds(pipe, "audio"), settings)
    (flat,) = generate(pipe, "audio", _embeds(pipe, "audio")[:, 0], settings)
    np.testing.assert_array_equal(output.data, flat.data)
    path = write_output(output, "audio", tmp_path / "sound")
    with wave.open(str(path), "rb") as wav:
        assert wav.getframerate() == SAMPLE_RATE and wav.getsampwidth() == 2 and wav.getnchannels() == 1
        assert wav.getnframes() == int(AUDIO_SECONDS * SAMPLE_RATE)


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_same_seed_same_output(pipes: dict, modality: str) -> None:
    pipe = pipes[modality]
    extra = {"height": HEIGHT, "width": WIDTH} if modality == "image" else {"audio_length_in_s": AUDIO_SECONDS}
    embeds = _embeds(pipe, modality)

    def run(seed: int, negative: str = "empty") -> np.ndarray:
        settings = DecoderSettings.for_modality(modality, steps=2, seed=seed, negative=negative, **extra)
        return np.asarray(generate(pipe, modality, embeds, settings)[0].data, dtype=np.float32)

    first = run(7)
    np.testing.assert_array_equal(first, run(7))
    assert not np.array_equal(first, run(8))
    assert not np.array_equal(first, run(7, negative="zeros"))


@pytest.mark.parametrize("modality,bad", [("image", (1, 76, 32)), ("image", (1, 77, 16)), ("image", (77, 32)),
                                          ("video", (1, 77, 32)), ("audio", (1, 2, 16)), ("audio", (1, 8))])
def test_wrong_prompt_embeds_shape(pipes: dict, modality: str, bad: tuple) -> None:
    with pytest.raises(ValueError, match=rf"{modality} prompt_embeds must be \[B, .*got \[{bad[0]}"):
        generate(pipes[modality], modality, torch.zeros(bad), DecoderSettings.for_modality(modality, steps=1))


def test_folder_without_model_index(tmp_path: Path) -> None:
    folder = tmp_path / "sd15"
    (folder / "unet").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=rf"{folder}: no model_index.json.*StableDiffusionPipeline.*unet/"):
        load_decoder(folder, "image")


def test_wrong_pipeline_class_and_missing_component(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'StableDiffusionPipeline' cannot decode video.*TextToVideoSDPipeline"):
        load_decoder(folders["image"], "video")
    folder = tmp_path / "audioldm"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "AudioLDMPipeline"}))
    with pytest.raises(FileNotFoundError, match=r"missing component folders \['unet', 'vae'"):
        load_decoder(folder, "audio")


def test_settings_defaults_and_checks() -> None:
    video = DecoderSettings.for_modality("video")
    assert (video.steps, video.guidance_scale, video.height, video.width, video.num_frames, video.fps) == \
        (50, 7.5, 320, 576, 24, 8)
    assert DecoderSettings.for_modality("audio").audio_length_in_s == 9.0
    assert DecoderSettings.for_modality("image").negative == "empty"
    with pytest.raises(ValueError, match="negative must be one of"):
        DecoderSettings(negative="random")
    with pytest.raises(ValueError, match="modality must be one of"):
        DecoderSettings.for_modality("3d")
