"""Tests for the synthetic skill benchmark (`skillgpt.data.synthetic`).

Besides determinism and file layout, the honesty test checks the core promise: the level is
visible in motion only. A simple classifier on one frame per video must score near chance, while
the same classifier on per-clip motion (first vs last frame of each one-second window, as the
model samples them) must score clearly above chance.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

decord = pytest.importorskip("decord")

from skillgpt.config.schema import PROFICIENCY_LEVELS  # noqa: E402
from skillgpt.data.synthetic import (  # noqa: E402
    FLAW_TYPES, FOLLOW_UP, QUESTION, TEMPO, make_sample_data, phase_track, sample_flaws,
)

SMALL = {"train": 2, "val": 1}
EXPECTED_FLAWS = dict(zip(PROFICIENCY_LEVELS, [6, 4, 2, 0]))


def _frames(path: Path, indices: list[int] | None = None) -> np.ndarray:
    vr = decord.VideoReader(str(path))
    return vr.get_batch(indices if indices is not None else list(range(len(vr)))).asnumpy()


def _load(root: Path, name: str) -> list[dict]:
    return json.loads((root / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict, dict]:
    """The same seed rendered twice, once with a worker pool and once in-process."""
    a, b = tmp_path_factory.mktemp("run_a"), tmp_path_factory.mktemp("run_b")
    sa = make_sample_data(a, seed=3, per_level=SMALL, workers=2, progress=False)
    sb = make_sample_data(b, seed=3, per_level=SMALL, workers=1, progress=False)
    return a, b, sa, sb


def test_same_seed_is_identical(small_runs: tuple[Path, Path, dict, dict]) -> None:
    a, b, sa, sb = small_runs
    assert {k: v for k, v in sa.items() if k != "out_dir"} == {k: v for k, v in sb.items() if k != "out_dir"}
    names = sorted(p.name for p in a.glob("*.json"))
    assert names == sorted(p.name for p in b.glob("*.json"))
    assert set(names) == {"metadata.json", *(f"{kind}_{s}.json" for kind in ("captions", "skill") for s in SMALL)}
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for item in _load(a, "skill_train.json") + _load(a, "skill_val.json"):
        assert np.array_equal(_frames(a / item["video"]), _frames(b / item["video"])), item["id"]


def test_different_seed_differs(tmp_path: Path, small_runs: tuple[Path, Path, dict, dict]) -> None:
    a = small_runs[0]
    make_sample_data(tmp_path, seed=4, per_level={"val": 1}, workers=1, progress=False)
    first_a, first_b = _load(a, "skill_val.json")[0], _load(tmp_path, "skill_val.json")[0]
    assert not np.array_equal(_frames(a / first_a["video"], [0]), _frames(tmp_path / first_b["video"], [0]))


def test_videos_decode(small_runs: tuple[Path, Path, dict, dict]) -> None:
    a = small_runs[0]
    for split in SMALL:
        for item in _load(a, f"skill_{split}.json"):
            path = a / item["video"]
            assert item["video"] == f"videos/{split}/{item['id']}.mp4" and path.is_file()
            vr = decord.VideoReader(str(path))
            assert len(vr) == 72 and vr.get_avg_fps() == pytest.approx(8.0)  # 8 beats + 1 lead-out
            assert _frames(path).shape == (72, 64, 64, 3)


def test_balanced_labels_and_json_shape(small_runs: tuple[Path, Path, dict, dict]) -> None:
    a, _, summary, _ = small_runs
    meta = _load(a, "metadata.json")
    assert summary["num_videos"] == 4 * sum(SMALL.values()) == len(meta["videos"])
    for split, n in SMALL.items():
        skill, caps = _load(a, f"skill_{split}.json"), _load(a, f"captions_{split}.json")
        assert [s["id"] for s in skill] == [c["id"] for c in caps]
        assert len({s["id"] for s in skill}) == len(skill) == 4 * n
        assert summary["splits"][split]["levels"] == {lvl: n for lvl in PROFICIENCY_LEVELS}
        assert sorted(s["label"] for s in skill) == sorted(PROFICIENCY_LEVELS * n)
        for sc, counts in summary["splits"][split]["scenarios"].items():
            assert max(counts.values()) - min(counts.values()) == 0, (sc, counts)
        for c in caps:
            assert set(c) == {"id", "video", "caption"} and len(c["caption"]) > 20
        for s in skill:
            assert set(s) == {"id", "video", "scenario", "label", "conversations", "beats", "flaws"}
            conv = s["conversations"]
            assert [t["from"] for t in conv] == ["human", "gpt", "human", "gpt"]
            assert conv[0]["value"] == QUESTION and conv[1]["value"] == s["label"]
            assert conv[2]["value"] == FOLLOW_UP and len(conv[3]["value"]) > 20
            if s["label"] == "Late Expert":
                assert conv[3]["value"].startswith("Excellent")
            else:
                assert f"on {EXPECTED_FLAWS[s['label']]} of 8 beats" in conv[3]["value"]


def test_metadata_motion_facts(small_runs: tuple[Path, Path, dict, dict]) -> None:
    meta = _load(small_runs[0], "metadata.json")
    gen = meta["generator"]
    assert gen["seed"] == 3 and gen["num_frames"] == 72 and gen["beats"] == 8
    assert gen["flawed_beats_per_level"] == EXPECTED_FLAWS
    for v in meta["videos"]:
        assert len(v["flawed_beats"]) == EXPECTED_FLAWS[v["level"]] == len(set(v["flawed_beats"]))
        assert set(v["flaw_types"]) <= set(FLAW_TYPES)
        assert all(0 <= b < 8 for b in v["flawed_beats"]) and 0 <= v["start_phase"] < 1


def test_phase_track_loses_rhythm() -> None:
    """A flawed beat makes no net progress between its first and last frame; the loss is kept."""
    tempo = TEMPO["gymnastics_swing"]
    clean = phase_track([], tempo, 0.0, 72, 8, np.random.default_rng(1))
    steps = np.diff(clean)
    assert np.all(steps > 0) and abs(steps.mean() * 8 - tempo) < 0.1 * tempo and steps.std() > 0
    assert np.all(clean[23] - clean[16] > 0.15)  # a clean beat travels about a quarter loop
    for kind, net in (("hesitation", 0.0), ("rush", 1.0), ("stumble", 0.0)):
        flaw = sample_flaws("Novice", 8, np.random.default_rng(0))[0] | {"beat": 2, "type": kind, "start_s": 2.0}
        flawed = phase_track([flaw], tempo, 0.0, 72, 8, np.random.default_rng(1))
        assert np.allclose(flawed[:17], clean[:17])  # identical up to the beat's first frame
        assert flawed[23] - flawed[16] == pytest.approx(net, abs=1e-9), kind  # same pose at both ends
        inside = flawed[17:23] - flawed[16]
        assert np.ptp(inside) > (0.05 if kind != "hesitation" else -1), kind  # slips and rushes do move
        gap = flawed[24:] - clean[24:]  # after the flawed beat: a constant offset, no catch-up
        assert np.ptp(gap) < 1e-9 and abs(gap[0] - (net - (clean[23] - clean[16]))) < 0.05, kind
    rng = np.random.default_rng(0)
    assert len(sample_flaws("Novice", 8, rng)) == 6 and sample_flaws("Late Expert", 8, rng) == []


def test_lost_beats_are_still_between_bracket_frames(small_runs: tuple[Path, Path, dict, dict]) -> None:
    """First and last frame of each 1 s clip: identical on lost beats, different on clean ones."""
    a = small_runs[0]
    meta = {v["id"]: v for v in _load(a, "metadata.json")["videos"]}
    for item in _load(a, "skill_train.json"):
        frames = _frames(a / item["video"]).astype(np.int16)
        for beat in range(8):
            change = np.abs(frames[8 * beat + 7] - frames[8 * beat]).max()
            if beat in meta[item["id"]]["flawed_beats"]:
                assert change <= 2, (item["id"], beat, change)
            else:
                assert change > 40, (item["id"], beat, change)


# --------------------------------------------------------------------------- honesty
def _logreg_cv(x: np.ndarray, y: np.ndarray, folds: int = 4, l2: float = 1e-2, steps: int = 400) -> float:
    """Held-out accuracy of multinomial logistic regression (numpy, gradient descent), k-fold."""
    idx = np.random.default_rng(0).permutation(len(y))
    correct = 0
    for f in range(folds):
        te, tr = idx[f::folds], np.setdiff1d(idx, idx[f::folds])
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        z = np.c_[(x - mu) / sd, np.ones(len(x))]
        w, onehot = np.zeros((z.shape[1], 4)), np.eye(4)[y[tr]]
        for _ in range(steps):
            logits = z[tr] @ w
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            w -= 0.5 * (z[tr].T @ (p - onehot) / len(tr) + l2 * w)
        correct += int((np.argmax(z[te] @ w, 1) == y[te]).sum())
    return correct / len(y)


def _centroid_cv(x: np.ndarray, y: np.ndarray, folds: int = 4) -> float:
    """Held-out accuracy of a nearest-centroid classifier on standardised features, k-fold."""
    idx = np.random.default_rng(0).permutation(len(y))
    correct = 0
    for f in range(folds):
        te, tr = idx[f::folds], np.setdiff1d(idx, idx[f::folds])
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        z = (x - mu) / sd
        cents = np.stack([z[tr][y[tr] == k].mean(0) for k in range(4)])
        correct += int((np.argmin(((z[te][:, None] - cents[None]) ** 2).sum(-1), 1) == y[te]).sum())
    return correct / len(y)


def _object(frames: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (x, y) and area of the pixels that differ from the background, per frame."""
    w = np.clip(np.abs(frames - background).sum(-1) - 40.0, 0, None)
    n = frames.shape[1]
    yy, xx = np.mgrid[0:n, 0:n]
    mass = w.sum((1, 2)) + 1e-6
    return np.stack([(w * xx).sum((1, 2)) / mass, (w * yy).sum((1, 2)) / mass], 1), (w > 0).mean((1, 2))


@pytest.fixture(scope="module")
def honesty_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """20 videos per level; per video the 16 frames a model samples and 3 random single frames."""
    root = tmp_path_factory.mktemp("honesty")
    make_sample_data(root, seed=11, per_level={"test": 20}, workers=2, progress=False)
    rng = np.random.default_rng(5)
    clips, singles, labels = [], [], []
    for item in _load(root, "skill_test.json"):
        video = _frames(root / item["video"]).astype(np.float32)
        clips.append(video[[i for b in range(8) for i in (8 * b, 8 * b + 7)]])  # first/last of each 1 s window
        singles.append(video[rng.integers(0, len(video), size=3)])
        labels.append(PROFICIENCY_LEVELS.index(item["label"]))
    return {"clips": np.stack(clips), "singles": np.stack(singles), "labels": np.array(labels)}


def test_single_frame_does_not_reveal_level(honesty_set: dict[str, np.ndarray]) -> None:
    clips, singles, y = honesty_set["clips"], honesty_set["singles"], honesty_set["labels"]
    n = clips.shape[2]
    scores = []
    for draw in range(singles.shape[1]):  # three independent draws of ONE frame per video
        feats = []
        for v in range(len(y)):
            frame = singles[v, draw]
            pos, area = _object(frame[None], np.median(clips[v], axis=0))
            small = frame.reshape(8, n // 8, 8, n // 8, 3).mean((1, 3)).ravel() / 255.0
            feats.append(np.concatenate([small, pos[0] / n, area]))
        x = np.array(feats)
        scores.append((_logreg_cv(x, y), _centroid_cv(x, y)))
    mean_lr, mean_nc = np.mean(scores, axis=0)
    assert mean_lr <= 0.45 and mean_nc <= 0.45, scores  # chance is 0.25


def test_motion_reveals_level(honesty_set: dict[str, np.ndarray]) -> None:
    clips, y = honesty_set["clips"], honesty_set["labels"]
    disp, diff = [], []
    for video in clips:
        pos, _ = _object(video, np.median(video, axis=0))
        extent = np.ptp(pos, axis=0).max() + 1e-6
        disp.append(np.linalg.norm(pos[1::2] - pos[0::2], axis=1) / extent)  # object travel per clip
        d = np.abs(video[1::2] - video[0::2]).mean((1, 2, 3))  # absolute frame difference per clip
        diff.append(d / d.mean())
    disp, diff = np.array(disp), np.array(diff)
    typical = np.median(disp)  # label-free: most clips of the whole set are clean
    x = np.c_[np.sort(np.abs(disp - typical), 1), np.sort(diff, 1)]
    acc_lr, acc_nc = _logreg_cv(x, y), _centroid_cv(x, y)
    assert acc_lr >= 0.6 and acc_nc >= 0.5, (acc_lr, acc_nc)


def test_extra_camera_views_film_the_same_performance(tmp_path: Path, small_runs) -> None:
    from skillgpt.data.synthetic import camera_view

    plain_root = small_runs[0]
    root = tmp_path / "mv"
    make_sample_data(root, seed=3, per_level={"val": 1}, workers=1, progress=False, views=["ego", "exo1", "exo2"])
    samples = _load(root, "skill_val_views.json")
    assert len(samples) == 4 and all(set(s["video"]) == {"ego", "exo1", "exo2"} for s in samples)
    # adding views does not change the main videos or the single-view JSON
    assert _load(root, "skill_val.json") == _load(plain_root, "skill_val.json")
    meta = {v["id"]: v for v in _load(root, "metadata.json")["videos"]}
    for s in samples:
        ego = _frames(root / s["video"]["ego"])
        assert np.array_equal(ego, _frames(plain_root / s["video"]["ego"]))
        exo = [_frames(root / s["video"][v]) for v in ("exo1", "exo2")]
        assert all(x.shape == ego.shape for x in exo) and not np.array_equal(exo[0], exo[1])
        assert meta[s["id"]]["level"] == s["label"]
    # the camera is a fixed per-frame remap: a still video stays still, motion stays motion
    still = np.repeat(np.arange(64 * 64 * 3, dtype=np.uint8).reshape(1, 64, 64, 3), 3, axis=0)
    moved = camera_view(still, {"zoom": 0.8, "offset": [3.0, 5.0], "mirror": True})
    assert (moved[0] == moved[1]).all() and (moved[1] == moved[2]).all()
    with pytest.raises(ValueError, match="views"):
        make_sample_data(tmp_path / "bad", per_level={"val": 1}, views=["ego"], progress=False)
