"""MTL-AQA -> score-rating conversations (see ``aqa.py`` for the output).

Input: ``final_annotations_dict``-style ``{"<video_id>": {"final_score": 78.4, "difficulty": 3.0, ...}}``
as JSON, or the public ``final_annotations_dict.pkl`` (keys ``(video, clip)`` -> id ``"video_clip"``, so
``video_pattern="{0:02d}_{1:02d}.mp4"`` names ``01_04.mp4``); ``split_file``: ``train_split_0.pkl`` /
``test_split_0.pkl`` or a JSON / text list of ids. ``video_pattern`` default: ``"{video_id}.mp4"``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from skillgpt.data.convert._common import Context, Conversion
from skillgpt.data.convert.aqa import convert_scores


def convert(input_path: Path, ctx: Context, *, video_pattern: Optional[str] = None,
            split_file: Optional[str] = None, question: Optional[str] = None) -> Conversion:
    return convert_scores(input_path, ctx, "final_score", video_pattern, split_file, question)
