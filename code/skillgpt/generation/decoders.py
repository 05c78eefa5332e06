"""Frozen diffusion decoders for NExT-GPT-style generation: conditioning in, files out.

An output projector turns the LLM's signal-token states into a decoder's `prompt_embeds`; this module loads
the decoder from a local diffusers folder, checks the conditioning shape, runs it and writes `.png`, `.mp4`
or `.wav`. One pipeline class per modality (see docs/generation-decoders.md for why):

- image: `StableDiffusionPipeline`, conditioning `[B, 77, 768]` for SD 1.x (CLIP text states);
- video: `TextToVideoSDPipeline` (ModelScope / ZeroScope), conditioning `[B, 77, 1024]`;
- audio: `AudioLDMPipeline`, conditioning the CLAP text embedding `[B, 512]` (`[B, 1, 512]` also accepted).
"""
from __future__ import annotations

import json
import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODALITIES = ("image", "video", "audio")
PIPELINE_CLASSES = {"image": "StableDiffusionPipeline", "video": "TextToVideoSDPipeline",
                    "audio": "AudioLDMPipeline"}
EXPECTED_COMPONENTS = {
    "image": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "video": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "audio": ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "vocoder"),
}
NEGATIVE_MODES = ("empty", "zeros")
SUFFIXES = {"image": ".png", "video": ".mp4", "audio": ".wav"}


@dataclass
class DecoderSettings:
    """How one decoder call runs. `DecoderSettings.for_modality(m)` gives NExT-GPT's inference defaults.

    negative: classifier-free guidance's unconditional branch. "empty" lets the pipeline encode the empty
    prompt with its own text encoder (what NExT-GPT does: it passes only `prompt_embeds`); "zeros" uses an
    all-zero conditioning of the same shape. Ignored when guidance_scale <= 1 (no guidance).
    height/width None: the UNet's native size. seed None: unseeded.
    """

    steps: int = 50
    guidance_scale: float = 7.5
    seed: int | None = 0
    height: int | None = None
    width: int | None = None
    num_frames: int = 24
    audio_length_in_s: float = 9.0
    fps: int = 8
    negative: str = "empty"

    @classmethod
    def for_modality(cls, modality: str, **overrides: Any) -> "DecoderSettings":
        """Defaults per modality (NExT-GPT's `inference.py`), with `overrides` applied."""
        _check_modality(modality)
        base: dict[str, Any] = {"steps": 50, "guidance_scale": 7.5}
        if modality == "image":
            base.update(height=512, width=512)
        elif modality == "video":
            base.update(height=320, width=576, num_frames=24, fps=8)
        else:
            base.update(audio_length_in_s=9.0)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_config(cls, modality: str, dec: Any) -> "DecoderSettings":
        """Settings of `generation.decoders.<modality>` (skillgpt.config.schema.DecoderRunConfig)."""
        _check_modality(modality)
        common: dict[str, Any] = dict(steps=dec.steps, guidance_scale=dec.guidance, seed=dec.seed,
                                      negative=dec.negative)
        if modality == "audio":
            return cls.for_modality(modality, audio_length_in_s=dec.length_s, **common)
        extra = dict(num_frames=dec.num_frames, fps=dec.fps) if modality == "video" else {}
        return cls.for_modality(modality, height=dec.height, width=dec.width, **extra, **common)

    def __post_init__(self) -> None:
        if self.negative not in NEGATIVE_MODES:
            raise ValueError(f"negative must be one of {NEGATIVE_MODES}, got {self.negative!r}")
        if self.steps < 1 or self.num_frames < 1 or self.fps < 1 or self.audio_length_in_s <= 0:
            raise ValueError(f"steps, num_frames, fps and audio_length_in_s must be positive: {self}")


@dataclass
class Generated:
    """One generated sample: a PIL image, frames `[F, H, W, 3]` uint8, or a mono waveform `[N]` float32."""

    modality: str
    data: Any
    fps: int | None = None
    sample_rate: int | None = None


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")


def _layout_help(modality: str) -> str:
    parts = ", ".join(f"{c}/" for c in EXPECTED_COMPONENTS[modality])
    return (f"expected a local diffusers {PIPELINE_CLASSES[modality]} folder: model_index.json "
            f"(\"_class_name\": \"{PIPELINE_CLASSES[modality]}\") and the sub-folders {parts} "
            "as written by save_pretrained or a Hugging Face snapshot download")


def load_decoder(folder: str | Path, modality: str, dtype: torch.dtype = torch.float32,
                 device: str | torch.device = "cpu") -> Any:
    """Load the `modality` decoder from a local diffusers folder (no network), on `device` in `dtype`."""
    _check_modality(modality)
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"{folder}: no model_index.json; {_layout_help(modality)}")
    class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    if class_name != PIPELINE_CLASSES[modality]:
        supported = ", ".join(f"{m}: {c}" for m, c in PIPELINE_CLASSES.items())
        raise ValueError(f"{folder}: pipeline class {class_name!r} cannot decode {modality} "
                         f"(supported: {supported}); {_layout_help(modality)}")
    missing = [c for c in EXPECTED_COMPONENTS[modality] if not (folder / c).is_dir()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing component folders {missing}; {_layout_help(modality)}")
    import diffusers

    cls = getattr(diffusers, class_name)
    pipe = cls.from_pretrained(str(folder), dtype=dtype, local_files_only=True)
    return pipe.to(device)


def conditioning_shape(pipe: Any, modality: str) -> tuple[int, int]:
    """(tokens, width) of one sample's `prompt_embeds`: e.g. (77, 768) for SD 1.x, (1, 512) for AudioLDM."""
    _check_modality(modality)
    if modality == "audio":
        width = pipe.unet.config.get("projection_class_embeddings_input_dim") or \
            pipe.text_encoder.config.projection_dim
        return 1, int(width)
    width = pipe.unet.config.cross_attention_dim
    if isinstance(width, (list, tuple)):
        width = width[0]
    return int(pipe.tokenizer.model_max_length), int(width)


def _checked_embeds(pipe: Any, modality: str, prompt_embeds: torch.Tensor) -> torch.Tensor:
    """`prompt_embeds` validated against the pipeline and moved to its device and dtype."""
    tokens, width = conditioning_shape(pipe, modality)
    shape = tuple(prompt_embeds.shape)
    ok = len(shape) == 3 and shape[1:] == (tokens, width)
    if modality == "audio" and len(shape) == 2:
        ok = shape[1] == width
    if not ok or shape[0] < 1:
        expected = f"[B, {tokens}, {width}]" + (f" or [B, {width}]" if modality == "audio" else "")
        raise ValueError(f"{modality} prompt_embeds must be {expected} for this "
                         f"{type(pipe).__name__}, got {list(shape)}")
    if modality == "audio" and len(shape) == 3:
        prompt_embeds = prompt_embeds[:, 0]
    return prompt_embeds.to(device=pipe.device, dtype=pipe.unet.dtype)


@torch.no_grad()
def generate(pipe: Any, modality: str, prompt_embeds: torch.Tensor,
             settings: DecoderSettings | None = None) -> list[Generated]:
    """Run the frozen decoder on projected conditioning; one `Generated` per batch row."""
    _check_modality(modality)
    settings = settings or DecoderSettings.for_modality(modality)
    embeds = _checked_embeds(pipe, modality, prompt_embeds)
    kwargs: dict[str, Any] = {"prompt_embeds": embeds, "num_inference_steps": settings.steps,
                              "guidance_scale": settings.guidance_scale}
    if settings.negative == "zeros" and settings.guidance_scale > 1:
        kwargs["negative_prompt_embeds"] = torch.zeros_like(embeds)
    if settings.seed is not None:
        # A CPU generator gives the same starting noise on every device.
        kwargs["generator"] = torch.Generator("cpu").manual_seed(settings.seed)
    if modality == "image":
        out = pipe(height=settings.height, width=settings.width, output_type="pil", **kwargs)
        return [Generated("image", image) for image in out.images]
    if modality == "video":
        out = pipe(height=settings.height, width=settings.width, num_frames=settings.num_frames,
                   output_type="np", **kwargs)
        frames = np.asarray(out.frames)  # [B, F, H, W, 3] in [0, 1]
        frames = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
        return [Generated("video", clip, fps=settings.fps) for clip in frames]
    out = pipe(audio_length_in_s=settings.audio_length_in_s, output_type="np", **kwargs)
    rate = int(pipe.vocoder.config.sampling_rate)
    return [Generated("audio", np.asarray(w, dtype=np.float32).reshape(-1), sample_rate=rate)
            for w in out.audios]


def write_output(output: Generated, modality: str, path_stem: str | Path) -> Path:
    """Write `output` next to `path_stem` with the modality's suffix (.png, .mp4, .wav); return the path."""
    _check_modality(modality)
    if output.modality != modality:
        raise ValueError(f"output is {output.modality}, not {modality}")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_name(stem.name + SUFFIXES[modality])
    if modality == "image":
        output.data.save(path, format="PNG")
    elif modality == "video":
        write_mp4(output.data, path, output.fps or 8)
    else:
        write_wav(output.data, path, output.sample_rate or 16000)
    return path


def write_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    """Frames `[F, H, W, 3]` uint8 to an H.264 (or MPEG-4 part 2) yuv420p .mp4 at `fps` (H, W even)."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be [F, H, W, 3] uint8, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even height and width, got {height}x{width}")
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = max(400_000, width * height * fps * 2)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_wav(waveform: np.ndarray, path: Path, sample_rate: int) -> None:
    """A mono float waveform in [-1, 1] to 16-bit PCM .wav (values outside are clipped)."""
    samples = np.clip(np.asarray(waveform, dtype=np.float32).reshape(-1), -1.0, 1.0)
    pcm = (samples * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
