"""Tests for skillgpt.data.audio: decoding, resampling, Kaldi fbank, clip cutting, errors."""
from __future__ import annotations

import math
import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from skillgpt.data.audio import (
    AudioConfig, MediaError, clip_bounds, decode_audio, kaldi_fbank, load_audio, load_waveform, resample,
)

CFG = AudioConfig()
SILENCE = (math.log(np.finfo(np.float32).eps) - CFG.mean) / CFG.std  # normalised log-mel of digital silence
PAD = (0.0 - CFG.mean) / CFG.std  # normalised value of the zero-padded frames


def tone(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * sr)) / sr)).astype(np.float32)


def signal(n: int, sr: int) -> np.ndarray:
    """Deterministic test signal: two sines plus broadband integer-hash noise."""
    i = np.arange(n)
    noise = 0.1 * (((i * 7919) % 101) - 50) / 50
    return (0.5 * np.sin(2 * np.pi * 440 * i / sr) + 0.25 * np.sin(2 * np.pi * 3000 * i / sr + 0.3) + noise).astype(
        np.float32
    )


def write_wav(path: Path, channels: list[np.ndarray], sr: int) -> Path:
    """16-bit PCM wav of float channels in [-1, 1]."""
    pcm = np.round(np.stack(channels, axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(len(channels))
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


def write_av(path: Path, audio: np.ndarray | None, sr: int, codec: str, video_frames: int = 0) -> Path:
    """A container with an optional video stream (black frames) and an optional audio stream [C, n]."""
    out = av.open(str(path), "w")
    vstream = astream = None
    if video_frames:
        vstream = out.add_stream("mpeg4", rate=10)
        vstream.width = vstream.height = 32
        vstream.pix_fmt = "yuv420p"
    if audio is not None:
        astream = out.add_stream(codec, rate=sr)
        astream.layout = "stereo" if audio.shape[0] == 2 else "mono"
    for _ in range(video_frames):
        out.mux(vstream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
    if astream is not None:
        fmt = "s16p" if codec == "flac" else "fltp"
        data = np.round(audio * 32767).astype(np.int16) if fmt == "s16p" else audio.astype(np.float32)
        for start in range(0, audio.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start:start + 1024]), format=fmt,
                                               layout=astream.layout.name)
            frame.sample_rate, frame.pts = sr, start
            out.mux(astream.encode(frame))
        out.mux(astream.encode(None))
    if vstream is not None:
        out.mux(vstream.encode(None))
    out.close()
    return path


def mel_centre(k: int, bins: int = 128, sr: int = 16000) -> float:
    mel = lambda f: 1127.0 * math.log(1 + f / 700.0)  # noqa: E731
    m = mel(20.0) + (k + 1) * (mel(sr / 2) - mel(20.0)) / (bins + 1)
    return 700.0 * (math.exp(m / 1127.0) - 1)


# --------------------------------------------------------------------------- fbank / resample (pure)


def numpy_fbank(x: np.ndarray, sr: int, bins: int) -> np.ndarray:
    """Independent float64 Kaldi fbank (Hann window, pre-emphasis 0.97, DC removal, snip edges), frame by frame."""
    size, shift = int(sr * 0.025), int(sr * 0.010)
    nfft = 1 << (size - 1).bit_length()
    mel = lambda f: 1127.0 * np.log(1 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
    edges = np.linspace(mel(20.0), mel(sr / 2), bins + 2)
    fmel = mel(np.arange(nfft // 2 + 1) * sr / nfft)
    weights = np.zeros((bins, nfft // 2 + 1))
    for k in range(bins):
        lo, mid, hi = edges[k:k + 3]
        weights[k, :-1] = np.clip(np.minimum((fmel - lo) / (mid - lo), (hi - fmel) / (hi - mid)), 0, None)[:-1]
    window = np.hanning(size)
    rows = []
    for i in range(1 + (len(x) - size) // shift):
        fr = x[i * shift:i * shift + size].astype(np.float64)
        fr = fr - fr.mean()
        fr = fr - 0.97 * np.concatenate([fr[:1], fr[:-1]])
        power = np.abs(np.fft.rfft(fr * window, nfft)) ** 2
        rows.append(np.log(np.maximum(weights @ power, np.finfo(np.float32).eps)))
    return np.stack(rows)


def test_fbank_matches_independent_numpy_reference() -> None:
    for n, sr, bins in [(16000, 16000, 128), (4321, 8000, 23)]:
        x = signal(n, sr)
        got = kaldi_fbank(torch.from_numpy(x), sr, bins)
        want = numpy_fbank(x, sr, bins)
        assert tuple(got.shape) == want.shape and got.dtype == torch.float32
        got = got.double().numpy()
        # float32 rounding (FFT, and filters computed in float32 like torchaudio's) only matters
        # for the weakest bins, far below the peak
        loud = want > want.max() - 16
        assert loud.mean() > 0.9
        np.testing.assert_allclose(got[loud], want[loud], atol=2e-4, rtol=0)
        np.testing.assert_allclose(np.exp(got), np.exp(want), atol=5e-6 * np.exp(want.max()), rtol=0)


def test_fbank_matches_torchaudio_kaldi_golden() -> None:
    """Values from ``torchaudio.compliance.kaldi.fbank`` (torchaudio 2.11.0) with ImageBind's arguments."""
    want = np.array([
        [-7.48722, 0.81942, 4.81557, 3.12372, -3.06861, -2.29909, -2.22289, -1.66316, -0.85403, 0.29927,
         7.30549, 5.75696, 1.28134, 1.34474, 4.60257, 5.35822],
        [-7.43237, 0.81364, 4.76471, 3.03454, -3.06730, -2.29974, -2.22264, -1.66291, -0.85431, 0.29891,
         7.22100, 5.67201, 1.28128, 1.34470, 4.60258, 5.35821],
        [-7.35507, 0.81349, 4.76214, 3.02992, -3.06967, -2.29884, -2.22303, -1.66325, -0.85391, 0.29844,
         7.08186, 5.53211, 1.28130, 1.34478, 4.60256, 5.35822],
    ])
    got = kaldi_fbank(torch.from_numpy(signal(800, 16000)), 16000, 16)
    # the golden values are rounded to 5 decimals (up to 5e-6) and float32 FFT/log results differ by CPU
    # kernel (1.5e-5 seen on one x86_64 machine); a preprocessing difference is orders of magnitude larger
    np.testing.assert_allclose(got.numpy(), want, atol=5e-5, rtol=0)
    assert kaldi_fbank(torch.zeros(399), 16000, 16).shape == (0, 16)  # shorter than one frame
    povey = kaldi_fbank(torch.from_numpy(signal(800, 16000)), 16000, 16, window="povey")
    assert povey.shape == got.shape and not torch.allclose(povey, got)


def test_resample_matches_torchaudio_golden_and_sine() -> None:
    """Values from ``torchaudio.functional.resample(x, 44100, 16000)`` (torchaudio 2.11.0)."""
    want = np.array([0.057382, 0.252653, 0.139618, -0.357384, -0.296696, 0.534681, 0.264436, -0.704876,
                     -0.106208, 0.753083, -0.048097, -0.653461, 0.156314])
    got = resample(torch.from_numpy(signal(300, 44100)), 44100, 16000)
    assert got.shape == (109,)  # ceil(300 * 160 / 441)
    np.testing.assert_allclose(got[::9].numpy(), want, atol=1e-6, rtol=0)
    # a band-limited sine stays that sine (away from the zero-padded edges); batch dims are kept
    x = torch.from_numpy(np.stack([tone(1.0, 44100), tone(1.0, 44100, 1000.0)]))
    y = resample(x, 44100, 16000)
    assert y.shape == (2, 16000)
    ref = torch.from_numpy(np.stack([tone(1.0, 16000), tone(1.0, 16000, 1000.0)]))
    torch.testing.assert_close(y[:, 200:-200], ref[:, 200:-200], atol=2e-3, rtol=0)
    assert resample(x, 16000, 16000) is x


def test_clip_bounds_follow_reference_sampler() -> None:
    # the fixed sampler (pytorchvideo 9368f30): starts i * (duration - 2) / (n - 1), the last clip ends at the end
    assert clip_bounds(5 * 16000, CFG) == [(0, 32000), (24000, 56000), (48000, 80000)]
    # cut with int(t * sr): 3.7 s -> 0, 0.85, 1.7 s
    assert clip_bounds(59200, CFG) == [(0, 32000), (13600, 45600), (27200, 59200)]
    # issue 16's 12.34 s file: starts 0 / 5.17 / 10.34 s (PyPI 0.1.5: 0 / 3.45 / 6.89 s); in float
    # 12.34 - 2 = 10.339999999999998, so int() lands one sample early, as in the reference
    assert clip_bounds(197440, CFG) == [(0, 32000), (82719, 114719), (165439, 197439)]
    # shorter than a clip: every clip is the whole track
    assert clip_bounds(16000, CFG) == [(0, 32000)] * 3
    with pytest.raises(ValueError):
        clip_bounds(16000, AudioConfig(num_clips=0))


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 s of a 440 Hz tone at 44.1 kHz, stereo."""
    x = tone(5.0, 44100)
    return write_wav(tmp_path_factory.mktemp("audio") / "tone.wav", [x, x], 44100)


def test_load_wav_shape_duration_and_determinism(tone_wav: Path) -> None:
    wav = load_waveform(tone_wav, 16000)
    assert wav.shape == (2, 80000) and wav.dtype == torch.float32
    assert 0.49 < float(wav.abs().max()) < 0.51
    out = load_audio(tone_wav, CFG)
    assert tuple(out.shape) == (3, 1, 128, 204) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert torch.equal(out, load_audio(tone_wav, CFG))
    # a 2 s clip has 198 frames; the 6 padded frames are zeros before normalisation
    torch.testing.assert_close(out[..., 198:], torch.full_like(out[..., 198:], PAD))
    # the loudest mel bin is the one centred nearest to 440 Hz
    peak = int(out[0, 0, :, :198].mean(dim=1).argmax())
    assert peak == min(range(128), key=lambda k: abs(mel_centre(k) - 440.0))


def test_silence_differs_from_tone_and_mono_mix(tmp_path: Path, tone_wav: Path) -> None:
    silent = load_audio(write_wav(tmp_path / "silent.wav", [np.zeros(16000 * 3, np.float32)], 16000), CFG)
    torch.testing.assert_close(silent[..., :198], torch.full_like(silent[..., :198], SILENCE))
    assert (load_audio(tone_wav, CFG) - silent).abs().max() > 1.0
    # every channel is decoded; the clips use channel 0 (the reference's kaldi fbank), not the channel mean
    x = tone(1.0, 16000)
    left_only = decode_audio(write_wav(tmp_path / "left.wav", [x, np.zeros_like(x)], 16000))
    mono = decode_audio(write_wav(tmp_path / "mono.wav", [x], 16000))
    assert left_only[1] == mono[1] == 16000 and left_only[0].shape == (2, 16000) and mono[0].shape == (1, 16000)
    torch.testing.assert_close(left_only[0][0], mono[0][0], atol=0, rtol=0)
    x = tone(3.0, 16000)
    opposite = load_audio(write_wav(tmp_path / "opposite.wav", [x, -x], 16000), CFG)  # channel mean: silence
    torch.testing.assert_close(opposite, load_audio(write_wav(tmp_path / "x.wav", [x], 16000), CFG), atol=1e-3, rtol=0)


def reference_clips(waveform: torch.Tensor, cfg: AudioConfig) -> torch.Tensor:
    """ImageBind's loop written out: ``waveform2melspec`` subtracts each clip's mean (all channels) in place
    on a view of the shared waveform, then kaldi fbank takes channel 0."""
    from skillgpt.data.audio import clip_to_melspec

    waveform = waveform.clone()
    out = []
    for a, b in clip_bounds(waveform.shape[1], cfg):
        clip = waveform[:, a:b]
        clip -= clip.mean()
        out.append(clip_to_melspec(clip[0], cfg))
    return torch.stack(out)


def test_overlapping_clips_see_earlier_means_removed_as_the_reference() -> None:
    from skillgpt.data.audio import waveform_to_clips

    n = int(2.9 * 16000)  # 3 clips of 2 s overlap
    rng = np.random.default_rng(3)
    left = torch.from_numpy(tone(2.9, 16000) + 0.3).float()  # a DC offset makes the means matter
    wave_ = torch.stack([left, torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.1 - 0.2)])
    before = wave_.clone()
    got = waveform_to_clips(wave_, CFG)
    assert torch.equal(wave_, before)  # the caller's waveform is untouched
    torch.testing.assert_close(got, reference_clips(wave_, CFG), atol=0, rtol=0)
    # each clip centred on a copy (not the reference) differs where clips overlap
    copies = torch.stack([waveform_to_clips(wave_[:, a:b], AudioConfig(num_clips=1))[0]
                          for a, b in clip_bounds(n, CFG)])
    assert (got - copies).abs().max() > 1e-3


def test_short_track_is_padded(tmp_path: Path) -> None:
    out = load_audio(write_wav(tmp_path / "short.wav", [tone(0.5, 16000)], 16000), CFG)
    assert tuple(out.shape) == (3, 1, 128, 204)
    assert torch.equal(out[0], out[2])  # every clip is the whole (short) track
    torch.testing.assert_close(out[..., 48:], torch.full_like(out[..., 48:], PAD))  # 0.5 s -> 48 frames


def test_flac_equals_wav(tmp_path: Path) -> None:
    x = signal(16000 * 3, 22050)
    wav = load_audio(write_wav(tmp_path / "a.wav", [x, x * 0.5], 22050), CFG)
    flac = load_audio(write_av(tmp_path / "a.flac", np.stack([x, x * 0.5]), 22050, "flac"), CFG)
    torch.testing.assert_close(flac, wav, atol=1e-6, rtol=0)


def test_mp4_audio_track_loads(tmp_path: Path, tone_wav: Path) -> None:
    x = tone(4.0, 44100)
    path = write_av(tmp_path / "clip.mp4", np.stack([x, x]), 44100, "aac", video_frames=20)
    wav = load_waveform(path, 16000)
    assert wav.shape[0] == 2 and abs(wav.shape[1] - 64000) <= 2048  # AAC adds up to a frame or two of padding
    out = load_audio(path, CFG)
    assert tuple(out.shape) == (3, 1, 128, 204) and torch.isfinite(out).all()
    ref = load_audio(tone_wav, CFG)
    assert int(out[1, 0, :, :198].mean(1).argmax()) == int(ref[1, 0, :, :198].mean(1).argmax())


def test_errors_name_the_path(tmp_path: Path) -> None:
    silent_video = write_av(tmp_path / "no_audio.mp4", None, 0, "", video_frames=10)
    with pytest.raises(MediaError, match=r"no_audio\.mp4.*no audio stream"):
        load_audio(silent_video, CFG)
    with pytest.raises(MediaError, match=r"missing\.wav.*not found"):
        load_audio(tmp_path / "missing.wav", CFG)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00" + bytes(range(256)) * 4)
    with pytest.raises(MediaError, match=r"junk\.wav.*expected an audio file"):
        load_audio(junk, CFG)
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp3"):
        load_audio(tmp_path / "empty.mp3", CFG)
