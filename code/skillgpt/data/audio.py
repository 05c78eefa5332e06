"""Audio file -> log-mel clips, following ImageBind's reference audio preprocessing.

Reference pipeline (ImageBind ``load_and_transform_audio_data``):
  * decode every channel, resample to ``sample_rate`` (``torchaudio.functional.resample`` defaults:
    band-limited sinc, reimplemented here),
  * ``num_clips`` clips of ``clip_duration`` seconds from pytorchvideo's fixed
    ``ConstantClipsPerVideoSampler`` (starts ``i * max(d - clip, 0) / max(n - 1, 1)``, ``clip_times``)
    over the waveform duration; a clip is samples ``[int(start * sr), int(end * sr))``,
  * per clip (``waveform2melspec``): subtract the clip's mean over all channels *in place* on the shared
    waveform (overlapping clips see earlier clips' means already removed), Kaldi fbank of channel 0
    (``torchaudio.compliance.kaldi.fbank`` with htk_compat, no energy, Hanning window, dither 0,
    25 ms / 10 ms frames; reimplemented in torch because no torchaudio release matches the pinned torch),
    transpose to [mel, frames], zero-pad or crop to ``target_length`` frames, add a channel dim,
    normalise ``(x - mean) / std``.

The resampler and fbank compute in float32 in torchaudio's order: on 16-bit wav files the output equals
the reference's bit for bit (tests/data/test_reference_preprocessing.py). Difference: a clip shorter than
one 25 ms frame gives all-padding instead of an error.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from skillgpt.config.schema import AudioConfig
from skillgpt.data.video import MediaError, clip_times

__all__ = [
    "AudioConfig", "MediaError", "clip_bounds", "clip_to_melspec", "decode_audio", "kaldi_fbank", "load_audio",
    "load_waveform", "mel_banks", "resample", "waveform_to_clips",
]

KALDI_EPS = float(np.finfo(np.float32).eps)  # Kaldi/torchaudio floor before the log
WINDOWS = ("hanning", "povey")


# --------------------------------------------------------------------------- resampling
@functools.lru_cache(maxsize=16)
def _sinc_kernel(orig: int, new: int, taps: int, rolloff: float) -> tuple[Tensor, int]:
    """Windowed-sinc polyphase kernel [new, 1, 2 * width + orig] and its half ``width`` (rates reduced).

    Computed in float32 in the same order as ``torchaudio.functional.resample`` on float32 input, so the
    kernels (and resampled waveforms) agree exactly.
    """
    cutoff = min(orig, new) * rolloff  # low-pass just under the lower Nyquist, in units of the reduced rates
    width = math.ceil(taps * orig / cutoff)
    inputs = torch.arange(-width, width + orig, dtype=torch.float32) / orig  # input sample times
    outputs = torch.arange(0, -new, -1, dtype=torch.float32).unsqueeze(1) / new  # minus output times (one period)
    t = ((outputs + inputs) * cutoff).clamp(-taps, taps)  # distance in zero crossings of the sinc
    window = torch.cos(t * math.pi / taps / 2) ** 2  # Hann over +-taps zero crossings
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), t.sin() / t) * (window * (cutoff / orig))
    return kernel.unsqueeze(1), width


def resample(waveform: Tensor, orig_freq: int, new_freq: int, taps: int = 6, rolloff: float = 0.99) -> Tensor:
    """Band-limited resampling of ``waveform [..., n]`` to ``ceil(n * new / orig)`` samples.

    Same filter as ``torchaudio.functional.resample`` defaults (Hann-windowed sinc, 6 zero crossings,
    roll-off 0.99 of the lower Nyquist frequency, zero-padded edges).
    """
    if orig_freq <= 0 or new_freq <= 0 or int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError(f"sample rates must be positive integers, got {orig_freq} -> {new_freq}")
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernel, width = _sinc_kernel(orig, new, taps, rolloff)
    shape, length = waveform.shape[:-1], waveform.shape[-1]
    x = F.pad(waveform.reshape(-1, 1, length).float(), (width, width + orig))
    y = F.conv1d(x, kernel.to(x.device), stride=orig)  # [N, new, periods]: phase-major
    y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, : -(-new * length // orig)]
    return y.reshape(*shape, y.shape[-1])


# --------------------------------------------------------------------------- Kaldi fbank
def mel_scale(freq: Tensor | float) -> Tensor | float:
    """HTK mel scale ``1127 ln(1 + f / 700)``."""
    if isinstance(freq, Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


@functools.lru_cache(maxsize=16)
def mel_banks(
    num_bins: int, fft_size: int, sample_rate: float, low_freq: float = 20.0, high_freq: float = 0.0
) -> Tensor:
    """Kaldi's triangular mel filters [num_bins, fft_size // 2 + 1] (the Nyquist bin gets weight 0).

    ``num_bins + 2`` points equally spaced on the mel scale between ``low_freq`` and ``high_freq``
    (<= 0: relative to Nyquist); filter k rises from point k to k + 1 and falls to k + 2, in mel.
    Computed in float32 in torchaudio's order, so the filters agree exactly with ``kaldi.fbank``'s.
    """
    nyquist = 0.5 * sample_rate
    high = high_freq + nyquist if high_freq <= 0 else high_freq
    if not (num_bins > 3 and 0 <= low_freq < high <= nyquist):
        raise ValueError(f"bad mel banks: {num_bins} bins in [{low_freq}, {high}] Hz, Nyquist {nyquist}")
    lo, step = mel_scale(low_freq), (mel_scale(high) - mel_scale(low_freq)) / (num_bins + 1)
    k = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left, centre, right = lo + k * step, lo + (k + 1.0) * step, lo + (k + 2.0) * step
    mel = mel_scale((sample_rate / fft_size) * torch.arange(fft_size // 2, dtype=torch.float32)).unsqueeze(0)
    banks = torch.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)).clamp(min=0)
    return F.pad(banks, (0, 1))


def kaldi_fbank(
    waveform: Tensor,
    sample_rate: int,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window: str = "hanning",
    preemphasis: float = 0.97,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
) -> Tensor:
    """Log mel filterbank of a mono ``waveform [n]`` -> ``[frames, num_mel_bins]``, as Kaldi computes it.

    Matches ``torchaudio.compliance.kaldi.fbank`` with ``dither=0``, ``use_energy=False``,
    ``snip_edges=True`` and the other defaults (power spectrum, FFT size rounded up to a power of two,
    DC offset removed per frame, pre-emphasis, log floored at float32 eps). ``window``: "hanning"
    (symmetric Hann, as ImageBind asks for) or "povey" (Hann ** 0.85, Kaldi's default).
    A waveform shorter than one frame gives 0 frames.
    """
    if waveform.ndim != 1:
        raise ValueError(f"expected a mono waveform [n], got {tuple(waveform.shape)}")
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}, got {window!r}")
    size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    fft_size = 1 << (size - 1).bit_length()
    if waveform.shape[0] < size:
        return waveform.new_zeros(0, num_mel_bins)
    frames = waveform.float().unfold(0, size, shift)  # [m, size], only whole frames (snip edges)
    frames = frames - frames.mean(dim=1, keepdim=True)
    frames = frames - preemphasis * torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
    win = torch.hann_window(size, periodic=False, dtype=frames.dtype, device=frames.device)
    frames = frames * (win.pow(0.85) if window == "povey" else win)
    power = torch.fft.rfft(frames, n=fft_size).abs().pow(2)  # [m, fft_size // 2 + 1]
    banks = mel_banks(num_mel_bins, fft_size, float(sample_rate), low_freq, high_freq).to(power.device)
    return (power @ banks.T).clamp(min=KALDI_EPS).log()


# --------------------------------------------------------------------------- clips
def clip_bounds(num_samples: int, cfg: AudioConfig) -> list[tuple[int, int]]:
    """Sample ranges ``[int(start * sr), int(end * sr))`` of the clips, as the ImageBind reference cuts them.

    Clip times from pytorchvideo's fixed ``ConstantClipsPerVideoSampler`` (``clip_times``) over
    ``num_samples / sr`` seconds; ends may pass the end of a short track (the slice then stops there).
    """
    if cfg.num_clips < 1 or cfg.clip_duration <= 0 or cfg.sample_rate <= 0:
        raise ValueError(
            "audio config needs num_clips >= 1, clip_duration > 0 and sample_rate > 0, got "
            f"num_clips={cfg.num_clips}, clip_duration={cfg.clip_duration}, sample_rate={cfg.sample_rate}"
        )
    times = clip_times(num_samples / cfg.sample_rate, cfg.clip_duration, cfg.num_clips)
    return [(int(start * cfg.sample_rate), int(end * cfg.sample_rate)) for start, end in times]


def clip_to_melspec(clip: Tensor, cfg: AudioConfig) -> Tensor:
    """Mono clip [n] at ``cfg.sample_rate`` (mean already removed) -> normalised log-mel
    ``[1, num_mel_bins, target_length]``."""
    fbank = kaldi_fbank(clip, cfg.sample_rate, cfg.num_mel_bins).T  # [mel, frames]
    pad = cfg.target_length - fbank.shape[1]
    fbank = F.pad(fbank, (0, pad)) if pad > 0 else fbank[:, : cfg.target_length]
    return ((fbank - cfg.mean) / cfg.std).unsqueeze(0)


# --------------------------------------------------------------------------- decoding
def decode_audio(path: str | os.PathLike) -> tuple[Tensor, int]:
    """Decode the first audio stream of an audio or video file -> (float32 waveform [channels, n], sample rate).

    Samples are scaled to [-1, 1] (int16 / 32768 etc.); every channel is kept (the clips use channel 0).
    Raises MediaError (naming the path) for a missing or undecodable file, or one without audio.
    """
    import av

    path = Path(path)
    expected = "expected an audio file or a video with an audio track"
    if not path.exists():
        raise MediaError(f"{path}: file not found ({expected})")
    if not path.is_file() or path.stat().st_size == 0:
        raise MediaError(f"{path}: not a regular non-empty file ({expected})")
    try:
        container = av.open(os.fspath(path))
    except Exception as err:  # PyAV raises its own FFmpegError subclasses
        raise MediaError(f"{path}: cannot be opened ({expected}): {err}") from err
    with container:
        if not container.streams.audio:
            raise MediaError(f"{path}: has no audio stream ({expected})")
        stream = container.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")  # any sample format -> float planar; layout, rate kept
        chunks: list[np.ndarray] = []
        rate = 0
        try:
            for frame in container.decode(stream):
                rate = rate or frame.sample_rate
                if frame.sample_rate != rate:
                    raise MediaError(f"{path}: sample rate changes from {rate} to {frame.sample_rate} Hz ({expected})")
                chunks += [f.to_ndarray() for f in to_float.resample(frame)]  # [channels, samples]
            chunks += [f.to_ndarray() for f in to_float.resample(None)]
        except MediaError:
            raise
        except Exception as err:
            raise MediaError(f"{path}: failed to decode the audio stream ({expected}): {err}") from err
    waveform = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32, copy=False)) if chunks else torch.zeros(1, 0)
    if waveform.numel() == 0 or rate <= 0:
        raise MediaError(f"{path}: audio stream holds no samples ({expected})")
    return waveform, rate


def load_waveform(path: str | os.PathLike, sample_rate: int) -> Tensor:
    """Decoded waveform [channels, n] resampled to ``sample_rate``."""
    waveform, rate = decode_audio(path)
    return resample(waveform, rate, sample_rate)


def waveform_to_clips(waveform: Tensor, cfg: AudioConfig) -> Tensor:
    """Waveform [channels, n] (or mono [n]) at ``cfg.sample_rate`` -> ``[num_clips, 1, num_mel_bins, target_length]``.

    As the reference's ``waveform2melspec``: each clip's mean over all its channels is subtracted in place
    from the shared waveform (so a clip overlapping an earlier one sees that clip's mean already removed),
    then the fbank takes channel 0. The caller's tensor is left untouched.
    """
    shared = waveform.reshape(-1, waveform.shape[-1]).float().clone()  # [C, n]
    clips = []
    for a, b in clip_bounds(shared.shape[-1], cfg):
        view = shared[:, a:b]
        if view.numel():
            view -= view.mean()
        clips.append(clip_to_melspec(view[0], cfg))
    return torch.stack(clips).contiguous()


def load_audio(path: str | os.PathLike, cfg: AudioConfig) -> Tensor:
    """Decode and preprocess an audio track into float32 ``[num_clips, 1, num_mel_bins, target_length]``.

    ``path``: an audio file (.wav/.flac/.mp3/...) or a video whose first audio stream is used.
    Raises MediaError (naming the path) for a missing or undecodable file, or one without audio.
    """
    return waveform_to_clips(load_waveform(path, cfg.sample_rate), cfg)
