"""Config composition, strict validation, save/load round trip and diffs."""
from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from skillgpt.config import (
    Config,
    ConfigError,
    FreezeConfig,
    config_diff,
    load_config,
    load_resolved,
    parse_overrides,
    save_config,
)

BASE = """
run_name: base_run
train:
  epochs: 3
  lr: 1.0e-4
  output_dir: runs/${run_name}
data:
  train: data/train.json
"""
STAGE_1 = """
stage: 1
preset: tiny
run_name: stage1
train:
  epochs: 5
"""
TINY = """
model:
  llm:
    path: ckpt/tiny-llm
    dtype: bfloat16
  encoder:
    vision_layers: 2
freeze:
  llm: lora
stage_1:
  freeze:
    llm: full
  train:
    lr: 2.0e-4
stage_2:
  model:
    llm:
      lora:
        r: 8
"""
OTHER = """
model:
  llm:
    path: ckpt/other
  projector:
    name: mlp2x_gelu
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def cdir(tmp_path: Path) -> Path:
    """A config dir: base.yaml, stage_1.yaml, model/tiny.yaml, model/other.yaml."""
    root = tmp_path / "config"
    _write(root / "base.yaml", BASE)
    _write(root / "stage_1.yaml", STAGE_1)
    _write(root / "model" / "tiny.yaml", TINY)
    _write(root / "model" / "other.yaml", OTHER)
    return root


def _error(stage_file: Path, overrides: list[str] = (), **kw: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(stage_file, overrides, **kw)
    return str(info.value)


# ----------------------------------------------------------------------------- composition


def test_merge_order(cdir: Path) -> None:
    cfg = load_config(cdir / "stage_1.yaml")
    assert isinstance(cfg, Config) and isinstance(cfg.freeze, FreezeConfig)
    assert cfg.run_name == "stage1"  # stage file over base
    assert cfg.train.epochs == 5
    assert cfg.train.output_dir == "runs/stage1"  # interpolation resolved after all merges
    assert cfg.data.train == "data/train.json"  # from base, relative path kept as written
    assert cfg.model.llm.path == "ckpt/tiny-llm"  # from the preset
    assert cfg.model.llm.dtype == "bfloat16"
    assert cfg.model.encoder.vision_layers == 2
    assert cfg.freeze.llm == "full"  # preset stage_1 section over preset common part
    assert cfg.train.lr == pytest.approx(2e-4)  # preset stage_1 section over base
    assert cfg.model.llm.lora.r == 16  # stage_2 section not applied
    assert cfg.preset == "tiny" and cfg.stage == 1


def test_stage_selects_preset_section(cdir: Path) -> None:
    cfg = load_config(cdir / "stage_1.yaml", ["stage=2"])
    assert cfg.stage == 2
    assert cfg.freeze.llm == "lora"
    assert cfg.model.llm.lora.r == 8
    assert cfg.train.lr == pytest.approx(1e-4)
    stage_2 = _write(cdir / "stage_2.yaml", "stage: 2\npreset: tiny\n")
    assert load_config(stage_2).model.llm.lora.r == 8


def test_overrides(cdir: Path) -> None:
    cfg = load_config(
        cdir / "stage_1.yaml",
        [
            "train.lr=3e-4",
            "model.llm.lora.target_modules=[q_proj,k_proj]",
            "data.val=",
            "run_name=007",
            "freeze.llm=frozen",
            "train.resume=false",
            "eval.labels=[a, b]",
        ],
    )
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.model.llm.lora.target_modules == ["q_proj", "k_proj"]
    assert cfg.data.val is None
    assert cfg.run_name == "007"  # str field keeps the text
    assert cfg.train.output_dir == "runs/007"
    assert cfg.freeze.llm == "frozen"  # command line over the preset stage section
    assert cfg.train.resume is False
    assert cfg.eval.labels == ["a", "b"]


def test_last_override_wins(cdir: Path) -> None:
    cfg = load_config(cdir / "stage_1.yaml", ["train.epochs=7", "train.epochs=9"])
    assert cfg.train.epochs == 9


def test_preset_switch_on_command_line(cdir: Path) -> None:
    cfg = load_config(cdir / "stage_1.yaml", ["preset=other"])
    assert cfg.preset == "other"
    assert cfg.model.llm.path == "ckpt/other"
    assert cfg.model.projector.name == "mlp2x_gelu"
    assert cfg.freeze.llm == "frozen"  # nothing of tiny.yaml applied
    assert cfg.train.lr == pytest.approx(1e-4)


def test_preset_as_path(cdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = str(cdir / "model" / "other.yaml")
    assert load_config(cdir / "stage_1.yaml", [f"preset={absolute}"]).model.llm.path == "ckpt/other"
    monkeypatch.chdir(tmp_path)
    cfg = load_config(cdir / "stage_1.yaml", ["preset=config/model/tiny.yaml"])
    assert cfg.preset == "config/model/tiny.yaml" and cfg.freeze.llm == "full"


def test_config_dir_and_optional_base(cdir: Path, tmp_path: Path) -> None:
    elsewhere = _write(tmp_path / "exp" / "mine.yaml", STAGE_1 + "data:\n  train: t.json\n")
    cfg = load_config(elsewhere, ["train.output_dir=out"], config_dir=cdir)
    assert cfg.train.epochs == 5 and cfg.model.llm.path == "ckpt/tiny-llm"
    assert cfg.data.train == "t.json"
    (cdir / "base.yaml").unlink()
    msg = _error(cdir / "stage_1.yaml")  # base gave data.train and output_dir
    assert "data.train" in msg and "train.output_dir" in msg
    cfg = load_config(cdir / "stage_1.yaml", ["data.train=x.json", "train.output_dir=o"])
    assert cfg.train.epochs == 5 and cfg.run_name == "stage1"


def test_parse_overrides() -> None:
    assert parse_overrides(["a.b=1", "c=[x, y]", "d=", "e=k=v", " f = 2.5"]) == [
        ("a.b", 1),
        ("c", ["x", "y"]),
        ("d", None),
        ("e", "k=v"),
        ("f", 2.5),
    ]
    assert parse_overrides(["run_name=true", "data.val=1e3"]) == [("run_name", "true"), ("data.val", "1e3")]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("extra", "key", "suggestion"),
    [
        ("data:\n  fromat: caption\n", "data.fromat", "data.format"),
        ("model:\n  llm:\n    lora:\n      rank: 4\n", "model.llm.lora.rank", None),
        ("lr: 0.1\n", "lr", "train.lr"),
        ("modle:\n  llm: {}\n", "modle", "model"),
    ],
)
def test_unknown_key_in_file(cdir: Path, extra: str, key: str, suggestion: str | None) -> None:
    stage = _write(cdir / "stage_1.yaml", STAGE_1 + extra)
    msg = _error(stage)
    assert str(stage) in msg and f"{key}: unknown key" in msg
    if suggestion:
        assert f"did you mean {suggestion}" in msg


def test_unknown_keys_all_listed(cdir: Path) -> None:
    stage = _write(cdir / "stage_1.yaml", STAGE_1 + "foo: 1\ndata:\n  trian: x\n")
    msg = _error(stage)
    assert "foo" in msg and "data.trian" in msg and "data.train" in msg


def test_unknown_key_in_base_and_preset(cdir: Path) -> None:
    _write(cdir / "base.yaml", BASE + "eval:\n  batchsize: 2\n")
    msg = _error(cdir / "stage_1.yaml")
    assert str(cdir / "base.yaml") in msg and "eval.batchsize" in msg and "eval.batch_size" in msg
    _write(cdir / "base.yaml", BASE)
    _write(cdir / "model" / "tiny.yaml", TINY + "stage_3:\n  freeze:\n    lm: full\n")
    msg = _error(cdir / "stage_1.yaml")  # inactive sections are checked too
    assert "tiny.yaml [stage_3]" in msg and "freeze.lm" in msg and "freeze.llm" in msg


def test_unknown_key_on_command_line(cdir: Path) -> None:
    msg = _error(cdir / "stage_1.yaml", ["train.lrr=1"])
    assert "command line" in msg and "train.lrr" in msg and "train.lr" in msg


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.epochs=abc", "train.epochs"),
        ("train.epochs=null", "train.epochs"),
        ("train.lr=fast", "train.lr"),
        ("model.encoder.pool=[1]", "model.encoder.pool"),
        ("model.llm.lora.target_modules=q_proj", "model.llm.lora.target_modules"),
        ("train=5", "train"),
        ("train.resume=maybe", "train.resume"),
    ],
)
def test_wrong_type_on_command_line(cdir: Path, override: str, key: str) -> None:
    msg = _error(cdir / "stage_1.yaml", [override])
    assert msg.startswith(f"command line: {key}:")


def test_wrong_type_in_file(cdir: Path) -> None:
    _write(cdir / "model" / "tiny.yaml", TINY.replace("vision_layers: 2", "vision_layers: two"))
    msg = _error(cdir / "stage_1.yaml")
    assert "tiny.yaml" in msg and "model.encoder.vision_layers" in msg


def test_missing_values_listed(cdir: Path) -> None:
    stage = _write(cdir / "stage_1.yaml", "run_name: r\n")
    (cdir / "base.yaml").unlink()
    msg = _error(stage)
    assert str(stage) in msg
    for key in ("preset", "model.llm.path", "data.train", "train.output_dir"):
        assert key in msg


def test_missing_set_explicitly(cdir: Path) -> None:
    _write(cdir / "model" / "tiny.yaml", TINY.replace("path: ckpt/tiny-llm", "path: ???"))
    msg = _error(cdir / "stage_1.yaml")
    assert msg.startswith(f"{cdir / 'stage_1.yaml'}: missing required values: model.llm.path.")
    # OmegaConf merge semantics: a later ??? does not unset an earlier value
    assert load_config(cdir / "stage_1.yaml", ["model.llm.path=???", "model.llm.path=p"]).model.llm.path == "p"
    assert load_config(cdir / "stage_1.yaml", ["preset=other", "data.train=???"]).data.train == "data/train.json"


def test_unknown_preset(cdir: Path) -> None:
    msg = _error(cdir / "stage_1.yaml", ["preset=tinny"])
    assert "command line" in msg and "preset" in msg and "other, tiny" in msg and "did you mean tiny" in msg
    _write(cdir / "stage_1.yaml", STAGE_1.replace("preset: tiny", "preset: huge"))
    msg = _error(cdir / "stage_1.yaml")
    assert "stage_1.yaml" in msg and "'huge'" in msg and "other, tiny" in msg
    msg = _error(cdir / "stage_1.yaml", ["preset=nope/x.yaml"])
    assert "not found" in msg


def test_override_without_equals(cdir: Path) -> None:
    msg = _error(cdir / "stage_1.yaml", ["train.lr"])
    assert "command line" in msg and "train.lr" in msg and "key=value" in msg
    with pytest.raises(ConfigError, match="invalid key"):
        parse_overrides(["a..b=1"])


@pytest.mark.parametrize(
    ("override", "key", "hint"),
    [
        ("model.llm.dtype=fp16", "model.llm.dtype", "float32, bfloat16, float16"),
        ("freeze.encoder=lora", "freeze.encoder", "only applies to freeze.llm"),
        ("freeze.projector=lora", "freeze.projector", "only applies to freeze.llm"),
        ("freeze.llm=partial", "freeze.llm", "frozen, lora, full"),
        ("freeze.encoder=trainable", "freeze.encoder", "frozen, full"),
        ("train.precision=fp16", "train.precision", "auto, fp32, bf16"),
        ("model.encoder.output=tokens", "model.encoder.output", "pooled, clip_embeddings, clip_tokens"),
        ("data.format=chat", "data.format", "conversation, caption"),
        ("model.encoder.pool=0", "model.encoder.pool", ">= 1"),
    ],
)
def test_invalid_choices(cdir: Path, override: str, key: str, hint: str) -> None:
    msg = _error(cdir / "stage_1.yaml", [override])
    assert msg.startswith(f"command line: {key}:") and hint in msg


def test_invalid_choice_names_file(cdir: Path) -> None:
    _write(cdir / "model" / "tiny.yaml", TINY.replace("llm: full", "llm: ful"))
    msg = _error(cdir / "stage_1.yaml")
    assert "tiny.yaml [stage_1]: freeze.llm" in msg and "did you mean full" in msg
    _write(cdir / "model" / "tiny.yaml", TINY.replace("r: 8", "r: 8\n  freeze:\n    encoder: lora"))
    msg = _error(cdir / "stage_1.yaml")  # inactive stage_2 section
    assert "tiny.yaml [stage_2]: freeze.encoder" in msg


def test_bad_files(cdir: Path) -> None:
    stage = _write(cdir / "stage_1.yaml", "train: [1\n")
    assert str(stage) in _error(stage) and "invalid YAML" in _error(stage)
    _write(stage, "- a\n")
    assert "mapping" in _error(stage)
    assert "file not found" in _error(cdir / "nope.yaml")
    _write(stage, STAGE_1)
    _write(cdir / "model" / "tiny.yaml", TINY + "preset: other\n")
    assert "cannot set 'preset'" in _error(stage)


# ----------------------------------------------------------------------------- save / diff


def test_save_load_round_trip(cdir: Path, tmp_path: Path) -> None:
    cfg = load_config(
        cdir / "stage_1.yaml",
        ["train.lr=3e-4", "run_name=1e3", "data.val=null", "data.test='null'", "eval.labels=[Novice, '2']"],
    )
    assert cfg.data.test == "null" and cfg.eval.labels == ["Novice", "2"]
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    text = path.read_text()
    assert "${" not in text and "runs/1e3" in text
    assert not any(line.startswith("stage_") for line in text.splitlines())
    again = load_resolved(path)
    assert again == cfg and dataclasses.asdict(again) == dataclasses.asdict(cfg)
    assert config_diff(cfg, again) == []
    save_config(again, path)
    assert path.read_text() == text


def test_load_resolved_is_strict(cdir: Path, tmp_path: Path) -> None:
    path = save_config(load_config(cdir / "stage_1.yaml"), tmp_path / "c.yaml")
    path.write_text(path.read_text() + "stage_1:\n  freeze: {}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: stage_1: unknown key"):
        load_resolved(path)
    path.write_text(path.read_text().replace("precision: auto", "precision: fp8"))
    with pytest.raises(ConfigError, match="train.precision"):
        load_resolved(_write(path, path.read_text().replace("stage_1:\n  freeze: {}\n", "")))


def test_config_diff(cdir: Path) -> None:
    a = load_config(cdir / "stage_1.yaml")
    b = load_config(
        cdir / "stage_1.yaml",
        ["train.lr=5e-4", "model.llm.lora.target_modules=[q_proj]", "data.val=v.json"],
    )
    assert config_diff(a, a) == []
    assert config_diff(a, b) == ["model.llm.lora.target_modules", "data.val", "train.lr"]
