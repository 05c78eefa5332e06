"""`skillgpt data validate` / `validate_config`: every problem named by file, sample and field; the
summary table; the result cache (hit on unchanged data, miss when the file, a media file or a setting changes)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from skillgpt.cli import main
from skillgpt.data.media import DataError
from skillgpt.data.validate import cache_path, validate_config


def _copy_split(ws, dest: Path, split: str = "train") -> list[dict]:
    """The workspace's split with absolute video paths, so the copy may live anywhere."""
    samples = json.loads((ws.data / f"skill_{split}.json").read_text())
    for s in samples:
        s["video"] = str(ws.data / s["video"])
    dest.write_text(json.dumps(samples))
    return samples


def _cfg(ws, train: Path, *extra: str):
    return ws.config(2, "validate", f"data.train={train}", "data.val=null", "data.test=null", *extra)


def test_clean_split_passes_with_counts(tiny_workspace, tmp_path, capsys) -> None:
    train = tmp_path / "train.json"
    samples = _copy_split(tiny_workspace, train)
    report = validate_config(_cfg(tiny_workspace, train), ["train", "val"], progress=False)
    assert report.ok, report.format()
    (split,) = report.splits
    assert split.samples == len(samples) and split.media_files == len(samples) and 0 < split.max_tokens <= 512
    assert sum(split.labels.values()) == len(samples) and set(split.labels) <= {"Novice", "Early Expert",
                                                                                "Intermediate Expert", "Late Expert"}
    assert report.not_set == ["val"]
    table = report.table()
    assert "train" in table and "samples" in table and "media files" in table and "basketball_dribble" in table


def test_broken_samples_are_named_by_file_sample_and_field(tiny_workspace, tmp_path, capsys) -> None:
    train = tmp_path / "train.json"
    samples = _copy_split(tiny_workspace, train)
    fake = tmp_path / "not_a_video.mp4"
    fake.write_text("this is text, not an mp4")
    samples[0]["video"] = str(fake)                                  # unreadable video
    samples[1]["label"] = "Grandmaster"                              # unknown label
    samples[2]["video"] = str(tmp_path / "gone.mp4")                 # missing file
    samples[3]["conversations"][0]["value"] = "<video> <video> Two?"  # placeholder / media mismatch
    samples[4]["conversations"][1]["value"] = "see <video>"          # placeholder in an answer
    samples[5]["score"] = "high"                                     # non-numeric score
    train.write_text(json.dumps(samples))

    code = main(["data", "validate", "--config", str(Path(__file__).resolve().parents[2] / "config" / "stage_2.yaml"),
                 "--splits", "train", *tiny_workspace.overrides(2, "validate", f"data.train={train}")])
    cap = capsys.readouterr()
    assert code == 2
    assert "samples" in cap.out and "errors" in cap.out  # the summary table still prints
    err = cap.err
    ids = [s["id"] for s in samples]
    expect = [(ids[0], "'video'", "cannot be opened as a video"), (ids[1], "'label'", "Grandmaster"),
              (ids[2], "'video'", "file not found"), (ids[3], "'conversations'", "2 <video> placeholder(s) but 1"),
              (ids[4], "'conversations'", "assistant turn"), (ids[5], "'score'", "expected a number")]
    for sid, field, words in expect:
        line = next((ln for ln in err.splitlines() if f"sample {sid}:" in ln and field in ln), None)
        assert line is not None and str(train) in line and words in line, (sid, field, err)
    assert "6 error(s)" in err


def test_multiview_missing_view_and_over_length(tiny_workspace, tmp_path) -> None:
    train = tmp_path / "views.json"
    samples = _copy_split(tiny_workspace, train)
    for s in samples:
        s["video"] = {"ego": s["video"], "exo1": s["video"]}
    del samples[2]["video"]["exo1"]
    train.write_text(json.dumps(samples))
    report = validate_config(_cfg(tiny_workspace, train, "data.views=[ego,exo1]"), ["train"], progress=False,
                             use_cache=False)
    (problem,) = report.errors
    assert problem.sample == samples[2]["id"] and problem.field == "video" and "exo1" in problem.message
    with pytest.raises(DataError, match=f"sample {samples[2]['id']}: field 'video'"):
        report.raise_for_errors()

    report = validate_config(_cfg(tiny_workspace, train, "data.views=[ego]", "model.llm.max_length=40"), ["train"],
                             progress=False, use_cache=False, decode=False)
    over = [p for p in report.errors if "max_length=40" in p.message]
    assert len(over) == len(samples) == report.splits[0].over_length


def test_second_run_comes_from_the_cache_until_something_changes(tiny_workspace, tmp_path) -> None:
    train = tmp_path / "train.json"
    samples = _copy_split(tiny_workspace, train)
    media = tmp_path / "clip.mp4"
    shutil.copy(samples[0]["video"], media)
    samples[0]["video"] = str(media)
    train.write_text(json.dumps(samples))
    cfg = _cfg(tiny_workspace, train)

    first = validate_config(cfg, ["train"], progress=False)
    assert first.ok and not first.splits[0].cached and cache_path(train).is_file()
    again = validate_config(cfg, ["train"], progress=False)
    assert again.splits[0].cached and again.splits[0].samples == first.splits[0].samples
    assert again.splits[0].labels == first.splits[0].labels

    media.write_text("broken")  # a media file changed: checked again
    broken = validate_config(cfg, ["train"], progress=False)
    assert not broken.splits[0].cached and [p.field for p in broken.errors] == ["video"]
    assert validate_config(cfg, ["train"], progress=False).splits[0].cached  # and the error is remembered

    shutil.copy(samples[1]["video"], media)
    os.utime(media, ns=(1, 1))
    assert validate_config(cfg, ["train"], progress=False).ok

    other = _cfg(tiny_workspace, train, "model.llm.max_length=100")  # a setting that matters
    assert not validate_config(other, ["train"], progress=False).splits[0].cached
    samples.pop()
    train.write_text(json.dumps(samples))  # the data changed
    changed = validate_config(cfg, ["train"], progress=False)
    assert not changed.splits[0].cached and changed.splits[0].samples == len(samples)


def test_mixture_splits_are_validated_per_dataset(tiny_workspace, tmp_path) -> None:
    train = tmp_path / "train.json"
    _copy_split(tiny_workspace, train)
    catalog = tmp_path / "datasets.yaml"
    catalog.write_text(f"mine:\n  format: conversation\n  train: {train}\n"
                       f"captions:\n  format: caption\n  train: {tiny_workspace.data / 'captions_train.json'}\n")
    cfg = _cfg(tiny_workspace, train, f"data.catalog={catalog}", "data.mixture={mine: 1.0, captions: 0.5}")
    report = validate_config(cfg, "train", progress=False, decode=False, use_cache=False)
    assert report.ok, report.format()
    assert [s.split for s in report.splits] == ["train:mine", "train:captions"]


# ---- placeholder counts: layout arithmetic from the config, equal to the built model's --------------------
PRESETS = ["tiny", "qwen2.5-1.5b", "vicuna-7b-v0"]
VARIANTS = {  # overrides on the tiny preset: every encoder output, projector, view mode and branch
    "pooled+linear": ["model.encoder.output=pooled", "model.projector.name=linear"],
    "clip_embeddings": ["model.encoder.output=clip_embeddings"],
    "grid-pool+pool": ["model.encoder.pool=2", "model.encoder.keep_cls=false", "model.projector.name=pool",
                       "model.projector.pool=2"],
    "resampler": ["model.projector.name=resampler", "model.projector.num_queries=3", "data.video.num_clips=3"],
    "prototype": ["model.projector.name=prototype", "model.projector.num_prototypes=5"],
    "fused-views+view_fusion": ["data.views=[ego,exo1]", "model.projector.name=view_fusion"],
    "fused-views+pool": ["data.views=[ego,exo1,exo2]", "model.projector.name=pool"],
    "separate-views": ["data.views=[ego,exo1]", "data.view_mode=separate"],
    "clip+pool": ["model.encoder.name=hf_image", "model.encoder.path={clip}", "model.projector.name=pool",
                  "data.video.frames_per_clip=3"],
    "videomae+resampler": ["model.encoder.name=hf_video", "model.encoder.path={videomae}", "model.encoder.pool=2",
                           "model.projector.name=resampler", "model.projector.num_queries=2"],
    "videomae-temporal-pool": ["model.encoder.name=hf_video", "model.encoder.path={videomae}",
                               "model.encoder.temporal_pool=true"],
    "timesformer": ["model.encoder.name=hf_video", "model.encoder.path={timesformer}"],
    "siglip-context": ["model.context.enabled=true", "model.context.encoder.path={siglip}", "model.context.frames=3",
                       "model.context.position=after", "model.context.encoder.pool=2"],
    "audio-clip_tokens": ["model.audio.enabled=true", "model.audio.output=clip_tokens", "data.audio.num_clips=2",
                          "model.encoder.audio_width=32", "model.encoder.audio_layers=2", "model.encoder.audio_heads=2"],
    "audio-pooled": ["model.audio.enabled=true", "model.audio.output=pooled", "model.audio.projector.name=linear",
                     "model.encoder.audio_width=32", "model.encoder.audio_layers=2", "model.encoder.audio_heads=2"],
    # three crops per clip: averaged by pooled / clip_embeddings, every crop's tokens otherwise
    "crops-clip_tokens": ["data.video.num_crops=3"],
    "crops-pooled": ["data.video.num_crops=3", "model.encoder.output=pooled", "model.projector.name=linear"],
    "crops-clip_embeddings": ["data.video.num_crops=3", "model.encoder.output=clip_embeddings"],
    "crops-resampler": ["data.video.num_crops=3", "model.projector.name=resampler", "model.projector.num_queries=2"],
    "crops-fused-views+view_fusion": ["data.video.num_crops=3", "data.views=[ego,exo1]",
                                      "model.projector.name=view_fusion"],
    "crops-clip+pool": ["data.video.num_crops=3", "model.encoder.name=hf_image", "model.encoder.path={clip}",
                        "model.projector.name=pool"],
    "crops-videomae": ["data.video.num_crops=3", "model.encoder.name=hf_video", "model.encoder.path={videomae}"],
    "crops-siglip-context": ["data.video.num_crops=3", "model.context.enabled=true",
                             "model.context.encoder.path={siglip}", "model.context.frames=3"],
}


@pytest.fixture(scope="module")
def hf_configs(tmp_path_factory) -> dict[str, Path]:
    """config.json (+ pixel statistics) of tiny CLIP, SigLIP, VideoMAE and TimeSformer: enough for the
    meta-device build and for the arithmetic; no weights."""
    from transformers import CLIPVisionConfig, SiglipVisionConfig, TimesformerConfig, VideoMAEConfig

    root = tmp_path_factory.mktemp("hf-configs")
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    configs = {
        "clip": CLIPVisionConfig(image_size=32, patch_size=8, **small),
        "siglip": SiglipVisionConfig(image_size=48, patch_size=8, **small),
        "videomae": VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, **small),
        "timesformer": TimesformerConfig(image_size=32, patch_size=16, num_frames=3, **small),
    }
    for name, config in configs.items():
        config.save_pretrained(root / name)
        (root / name / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3,
                                                                           "image_std": [0.5] * 3}))
    return {name: root / name for name in configs}


def _counts_agree(cfg) -> dict[str, int]:
    from skillgpt.models.build import build_model
    from skillgpt.models.tokens import placeholder_tokens

    model, _ = build_model(cfg, on_meta=True)
    counted = placeholder_tokens(cfg)
    assert counted == model.placeholder_tokens()
    return counted


@pytest.mark.parametrize("preset", PRESETS)
def test_placeholder_counts_of_every_preset_equal_the_models(preset, tiny_workspace) -> None:
    from skillgpt.config import load_config

    stage = Path(__file__).resolve().parents[2] / "config" / "stage_2.yaml"
    cfg = load_config(stage, [f"preset={preset}", f"model.llm.path={tiny_workspace.llm}", "train.init_from=null"])
    counts = _counts_agree(cfg)
    assert counts["<video>"] > counts["<image>"] > 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_placeholder_counts_of_encoder_projector_variants_equal_the_models(variant, tiny_workspace,
                                                                          hf_configs) -> None:
    overrides = [o.format(**{k: str(v) for k, v in hf_configs.items()}) for o in VARIANTS[variant]]
    _counts_agree(tiny_workspace.config(2, "validate", "train.init_from=null", *overrides))


def test_validate_builds_no_model(tiny_workspace, tmp_path, monkeypatch) -> None:
    from skillgpt.models import build

    def refuse(*_a, **_k):
        raise AssertionError("validate built a model")

    monkeypatch.setattr(build, "build_model", refuse)
    train = tmp_path / "train.json"
    _copy_split(tiny_workspace, train)
    report = validate_config(_cfg(tiny_workspace, train), ["train"], progress=False, decode=False, use_cache=False)
    assert report.ok and report.splits[0].max_tokens > 0, report.format()


def test_config_load_refuses_crops_other_than_1_and_3(tiny_workspace) -> None:
    from skillgpt.config.loader import ConfigError

    with pytest.raises(ConfigError, match=r"data.video.num_crops: invalid value 2; expected one of 1, 3"):
        tiny_workspace.config(2, "validate", "data.video.num_crops=2")


@pytest.mark.parametrize("output,factor", [("clip_tokens", 3), ("clip_embeddings", 1), ("pooled", 1)])
def test_three_crops_multiply_only_token_outputs(tiny_workspace, output, factor) -> None:
    """Every crop's tokens for clip_tokens; crops averaged (as ImageBind) for the embedding outputs; an
    image is one centre crop either way."""
    one, three = (_counts_agree(tiny_workspace.config(2, "validate", "train.init_from=null",
                                                      f"model.encoder.output={output}", f"data.video.num_crops={k}"))
                  for k in (1, 3))
    assert three["<video>"] == factor * one["<video>"] and three["<image>"] == one["<image>"]
