"""VideoGPT+'s frame sampling, index for index against its own loader (tests/fixtures/videogpt_plus)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from skillgpt.data.videogpt_sampling import PADDING, frame_slots, sampled_positions

CASES = json.loads((Path(__file__).parents[1] / "fixtures" / "videogpt_plus" / "sampling.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['num_frames']}f@{c['fps']}-{c['start']}-{c['end']}")
def test_frames_are_the_originals(case) -> None:
    segment = None if case["start"] is None else (case["start"], case["end"])
    positions = sampled_positions(case["num_frames"], case["fps"], segment, case["max_frames"], case["min_frames"],
                                  case["video_framerate"])
    assert frame_slots(positions, case["num_video_frames"]) == [PADDING if i == -1 else i for i in case["video"]]
    assert frame_slots(positions, case["num_context_images"]) == case["context"]


def test_a_segment_past_the_end_is_refused() -> None:
    with pytest.raises(ValueError, match="starts after"):
        sampled_positions(30, 30.0, (5.0, 9.0))

