"""The prompt builder's rules: placeholders from the media given, view expansion, eval's prompt choice."""
from __future__ import annotations

import pytest

from skillgpt.config.schema import DataConfig
from skillgpt.data.prompt import eval_question, expand_view_placeholders, logical_counts, place_placeholders

PLAIN = DataConfig(train=None)
SEPARATE = DataConfig(train=None, views=["ego", "exo"], view_mode="separate")
FUSED = DataConfig(train=None, views=["ego", "exo"], view_mode="fuse")


def test_a_question_without_placeholders_gets_one_per_item_in_kind_order() -> None:
    assert place_placeholders("Rate.", ["audio", "video", "image"], PLAIN) == "<video>\n<image>\n<audio>\nRate."
    assert place_placeholders("Rate.", [], PLAIN) == "Rate."
    assert place_placeholders("", ["video"], PLAIN) == "<video>"  # self-questioning's opener


def test_placeholders_the_question_holds_are_kept_where_they_are() -> None:
    assert place_placeholders("Look: <video> rate.", ["video"], PLAIN) == "Look: <video> rate."
    assert place_placeholders("<video> and", ["video", "video"], PLAIN) == "<video>\n<video> and"


def test_a_placeholder_of_a_kind_not_given_is_dropped() -> None:
    q = "<video> What is the proficiency level of this athlete?"
    assert place_placeholders(q, ["image"], PLAIN) == "<image>\nWhat is the proficiency level of this athlete?"
    assert place_placeholders("<video>\nWhat?", ["audio"], PLAIN) == "<audio>\nWhat?"
    assert place_placeholders("<video>\nWhat?", [], PLAIN) == "What?"


def test_more_placeholders_than_items_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"2 <video> placeholders but 1 video item"):
        place_placeholders("<video> <video> Compare.", ["video"], PLAIN)


def test_separate_views_share_one_video_placeholder_until_tokenization() -> None:
    assert logical_counts(["video", "video"], SEPARATE)["video"] == 1
    q = place_placeholders("Rate.", ["video", "video"], SEPARATE)
    assert q == "<video>\nRate."
    assert place_placeholders(q, ["video", "video"], SEPARATE) == q  # idempotent: no double expansion
    turns = expand_view_placeholders([{"from": "human", "value": q}], SEPARATE)
    assert turns[0]["value"] == "ego: <video> exo: <video>\nRate."
    assert expand_view_placeholders([{"from": "human", "value": q}], FUSED)[0]["value"] == q
    with pytest.raises(ValueError, match="not whole multi-view videos"):
        logical_counts(["video"], SEPARATE)


def test_eval_scores_with_the_samples_own_first_human_turn() -> None:
    sample = {"conversations": [{"from": "human", "value": "<video>\nWhat is it?"}, {"from": "gpt", "value": "x"}]}
    assert eval_question(sample, "<video> default") == "<video>\nWhat is it?"
    assert eval_question({"caption": "a dive"}, "<video> default") == "<video> default"
    assert eval_question({"conversations": [{"from": "gpt", "value": "x"}]}, "d") == "d"


def test_caption_prompts_take_their_placeholders_from_the_media(tmp_path) -> None:
    from skillgpt.data.checks import check_sample

    cfg = DataConfig(train=None, format="caption")
    assert any("<video>" in p for p in cfg.caption_prompts)
    checked = check_sample({"id": "red", "image": "red.png", "caption": "A red square."}, 0, cfg, "c.json", tmp_path)
    assert not checked.errors, checked.errors
    assert checked.turns is not None and checked.turns[0]["value"].startswith("<image>\n")
    assert "<video>" not in checked.turns[0]["value"]
    video = check_sample({"id": "v", "video": "v.mp4", "caption": "A drill."}, 0, cfg, "c.json", tmp_path)
    assert not video.errors and video.turns[0]["value"].count("<video>") == 1
