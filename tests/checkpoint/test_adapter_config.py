"""A LoRA adapter is loaded with the settings of its own adapter_config.json: a config.yaml that disagrees
(alpha, r, dropout, target modules) is refused naming both values, instead of silently running the adapter at
the config's scaling (alpha 32 / r 32 = 1.0 trained, 8 / 32 = 0.25 run) or failing on a raw size mismatch."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skillgpt.checkpoint.importers import run_import
from skillgpt.config import load_resolved, save_config
from skillgpt.inference.assistant import SkillAssistant
from skillgpt.models.llm import adapter_settings

FIX = Path(__file__).resolve().parents[1] / "fixtures"
SMALL = {"model.encoder": {"vision_width": 64, "vision_layers": 2, "vision_heads": 4, "out_dim": 32,
                           "audio_width": 48, "audio_layers": 2, "audio_heads": 4}, "model.llm.dtype": "float32"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with a LoRA adapter (r 32, alpha 32): the imported PandaGPT fixture."""
    return run_import("pandagpt", FIX / "pandagpt" / "pytorch_model.pt", tmp_path_factory.mktemp("lora") / "run",
                      FIX / "pandagpt" / "vicuna-tiny",
                      encoder=str(FIX / "imagebind" / "imagebind_small_weights.safetensors"), settings=SMALL)


def _edited(run: Path, tmp_path: Path, **lora) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    path = copy / "checkpoint-0" / "config.yaml"
    cfg = load_resolved(path)
    for key, value in lora.items():
        setattr(cfg.model.llm.lora, key, value)
    save_config(cfg, path)
    return copy


def test_matching_adapter_runs_at_its_own_scaling(run: Path) -> None:
    assert adapter_settings(run / "checkpoint-0" / "adapter")["alpha"] == 32
    model = SkillAssistant(run, device="cpu").model
    scalings = {m.scaling["default"] for m in model.llm.modules() if isinstance(getattr(m, "scaling", None), dict)}
    assert scalings == {1.0}


@pytest.mark.parametrize("change,message", [
    ({"alpha": 8}, r"lora_alpha 32 in adapter_config.json, model.llm.lora.alpha 8 in .*config.yaml"),
    ({"r": 16}, r"r 32 in adapter_config.json, model.llm.lora.r 16 in .*config.yaml"),
    ({"target_modules": ["q_proj", "v_proj"]}, r"target_modules \['k_proj', 'o_proj', 'q_proj', 'v_proj'\] in "
                                              r"adapter_config.json, model.llm.lora.target_modules \['q_proj', 'v_proj'\]"),
])
def test_disagreeing_config_is_refused_with_both_values(run: Path, tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SkillAssistant(_edited(run, tmp_path, **change), device="cpu")


def test_unreadable_adapter_config_is_named(run: Path, tmp_path: Path) -> None:
    copy = _edited(run, tmp_path)
    (copy / "checkpoint-0" / "adapter" / "adapter_config.json").write_text("{")
    with pytest.raises(ValueError, match=r"adapter_config.json: unreadable adapter config"):
        SkillAssistant(copy, device="cpu")
