"""Fixtures shared by the serving tests: the tiny trained checkpoint as an assistant, and a test clip."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def assistant(trained_run):
    from skillgpt.inference.assistant import SkillAssistant

    return SkillAssistant(trained_run.stage_2, device="cpu")


@pytest.fixture(scope="module")
def clip(trained_run) -> Path:
    return sorted((trained_run.workspace.data / "videos" / "test").glob("*.mp4"))[0]
