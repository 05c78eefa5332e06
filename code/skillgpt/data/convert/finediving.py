"""FineDiving -> score-rating conversations (see ``aqa.py`` for the output).

Input: ``{"<video_id>": {"dive_score": 78.4, "difficulty": 3.0, ...}, ...}`` as JSON, or the public
``FineDiving_fine-grained_annotation.pkl`` (keys ``(competition, index)`` -> id ``"competition_index"``);
``split_file``: ``train_split.pkl`` / ``test_split.pkl`` or a JSON / text list of ids.
``video_pattern`` (default ``"{video_id}.mp4"``; also ``{0}``, ``{1}`` for the key's parts) names the
clip, relative to ``media_root``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from skillgpt.data.convert._common import Context, Conversion
from skillgpt.data.convert.aqa import convert_scores


def convert(input_path: Path, ctx: Context, *, video_pattern: Optional[str] = None,
            split_file: Optional[str] = None, question: Optional[str] = None) -> Conversion:
    return convert_scores(input_path, ctx, "dive_score", video_pattern, split_file, question)
