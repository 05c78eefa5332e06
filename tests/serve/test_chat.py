"""`skillgpt chat` as people use it (a real pseudo-terminal), and the streaming it is built on."""
from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pytest

from skillgpt.serve.chat import ChatShell, Conversation

pexpect = pytest.importorskip("pexpect", reason="pexpect is in requirements-test.txt")

REPO = Path(__file__).resolve().parents[2]
LEVELS = ("Novice", "Early Expert", "Intermediate Expert", "Late Expert")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]")


def test_stream_reply_ends_with_exactly_what_reply_returns(assistant, clip) -> None:
    media = assistant.load_video(clip)
    conv = Conversation(media=media, exchanges=[("What is the proficiency level of this athlete?", "Novice")])
    for turns in (
        [{"from": "human", "value": assistant.with_placeholders("What should this athlete improve?", media)}],
        conv.turns(assistant, "And the timing?"),  # multi-turn: placeholders in the first human turn only
    ):
        assert turns[0]["value"].startswith("<video>") and all("<video>" not in t["value"] for t in turns[1:])
        expected = assistant.reply(turns, media, max_new_tokens=24)
        pieces = list(assistant.stream_reply(turns, media, max_new_tokens=24))
        assert pieces and pieces[-1] == expected
        assert all(not p.startswith(" ") and not p.endswith(" ") for p in pieces)  # trimmed like reply
    # closing the stream early stops generation (the worker thread is joined, nothing hangs)
    stream = assistant.stream_reply(turns, media, max_new_tokens=256)
    next(stream, None)
    stream.close()


def test_chat_shell_commands_without_a_terminal(assistant, clip) -> None:
    script = "/help\n/bogus\n/rate\n/video\nhello there\n/video " + str(clip) + "\n/rate\nhello again\n"  # EOF
    out = io.StringIO()
    assert ChatShell(assistant, stdin=io.StringIO(script), stdout=out, max_new_tokens=8).run() == 0
    text = out.getvalue()
    assert "/reset" in text and "unknown command /bogus" in text
    assert "error: usage: /video PATH" in text
    before_clip = text.split(f"loaded {clip}")[0]  # no rating and no answer without a clip: two refusals
    assert before_clip.count("error: no clip loaded; use /video PATH first") == 2 and "skillgpt> " not in before_clip
    assert "skillgpt> " in text and f"loaded {clip}" in text and "predicted level:" in text
    assert text.rstrip().endswith("bye")


def test_chat_with_an_unusable_start_clip_exits_2(assistant, tmp_path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x01 not a video")
    out = io.StringIO()
    assert ChatShell(assistant, stdin=io.StringIO("hello\n"), stdout=out).run(str(broken)) == 2
    assert f"error: {broken}" in out.getvalue() and "skillgpt> " not in out.getvalue()


def _spawn(*args: str):
    env = {**os.environ, "PYTHONPATH": str(REPO / "code"), "TERM": "dumb", "PYTHONUNBUFFERED": "1"}
    child = pexpect.spawn(sys.executable, ["-m", "skillgpt.cli", *args], cwd=str(REPO), env=env,
                          encoding="utf-8", timeout=90, dimensions=(50, 500))
    return child


def _until_prompt(child) -> str:
    child.expect_exact("you> ")
    return ANSI.sub("", child.before).replace("\r", "")


def _answer(block: str) -> str:
    return block.split("skillgpt> ", 1)[1].strip()


def test_chat_in_a_pty_two_turns_rate_reset_video_quit(trained_run, assistant, clip) -> None:
    child = _spawn("chat", "--ckpt", str(trained_run.stage_2), "--video", str(clip), "--max-new-tokens", "12")
    try:
        assert f"loaded {clip}" in _until_prompt(child)

        # two turns; each answer is the greedy reply of the same conversation through SkillAssistant
        conv = Conversation(media=assistant.load_video(clip))
        for question in ("What is the proficiency level of this athlete?", "What should this athlete improve?"):
            child.sendline(question)
            answer = _answer(_until_prompt(child))
            expected = assistant.reply(conv.turns(assistant, question), conv.media, max_new_tokens=12)
            assert answer == expected
            conv.exchanges.append((question, expected))

        child.sendline("/rate")
        block = _until_prompt(child)
        probs = {lvl: float(m.group(1)) for lvl in LEVELS
                 if (m := re.search(rf"^\s*{lvl}\s+(\d+\.\d)%", block, re.MULTILINE))}
        assert set(probs) == set(LEVELS) and abs(sum(probs.values()) - 100.0) < 0.3
        predicted = re.search(r"predicted level: (.+)", block).group(1).strip()
        assert predicted == max(probs, key=probs.get)

        child.sendline("/reset")
        assert "conversation cleared" in _until_prompt(child)

        child.sendline("/video /no/such/clip.mp4")
        block = _until_prompt(child)
        assert "error:" in block and "/no/such/clip.mp4" in block and "not found" in block

        child.sendline("How skilled is this athlete?")  # the chat goes on with the previous clip
        assert _answer(_until_prompt(child)) == assistant.ask("How skilled is this athlete?", conv.media,
                                                              max_new_tokens=12)

        child.sendline("/quit")
        child.expect_exact("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
