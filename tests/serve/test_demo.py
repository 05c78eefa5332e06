"""The Gradio demo as clients use it: a real server on a free local port, driven by gradio_client."""
from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="gradio is in requirements.txt")
gradio_client = pytest.importorskip("gradio_client")

from skillgpt.serve.demo import (  # noqa: E402
    ServeConfig, UploadRejected, build_demo, check_upload, example_clips, launch, launch_kwargs, serve_config,
)

# gradio's queue statistics use pandas options that pandas 3 deprecates (harmless, not ours)
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting.*"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated.*")]

LEVELS = {"Novice", "Early Expert", "Intermediate Expert", "Late Expert"}
TOKENS = 12
GEN = (0.0, 0.9, TOKENS)  # temperature, top-p, max new tokens (the settings sliders)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(assistant):
    """The demo on a free port with the default host/share (limits small enough to test)."""
    cfg = ServeConfig(port=free_port(), concurrency=4, max_upload_mb=0.25, max_new_tokens=TOKENS)
    demo = launch(build_demo(assistant, cfg), cfg, block=False)
    yield demo, cfg
    demo.close()


@pytest.fixture()
def client(served):
    return gradio_client.Client(served[0].local_url, verbose=False)


def rate(client, path: Path):
    return client.predict(gradio_client.handle_file(str(path)), None, *GEN, api_name="/rate")


def text_of(message: dict) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


# --------------------------------------------------------------------------- safety defaults


def test_binds_loopback_without_share_link_by_default(served) -> None:
    cfg = ServeConfig()
    assert cfg.host == "127.0.0.1" and cfg.share is False
    kwargs = launch_kwargs(cfg)
    assert kwargs["server_name"] == "127.0.0.1" and kwargs["share"] is False  # explicit: GRADIO_SHARE can't flip it
    demo, _ = served
    assert demo.server_name == "127.0.0.1" and demo.share is False and demo.share_url is None
    assert demo.local_url.startswith("http://127.0.0.1:")


def test_flags_override_serve_config_defaults() -> None:
    from skillgpt.cli import build_parser

    args = build_parser().parse_args(["demo", "--ckpt", "x"])
    assert serve_config(args) == ServeConfig()
    args = build_parser().parse_args(["demo", "--ckpt", "x", "--host", "0.0.0.0", "--port", "9000", "--share",
                                      "--concurrency", "3", "--max-upload-mb", "5", "--max-duration-s", "20"])
    cfg = serve_config(args)
    assert (cfg.host, cfg.port, cfg.share, cfg.concurrency, cfg.max_upload_mb, cfg.max_duration_s) == \
        ("0.0.0.0", 9000, True, 3, 5.0, 20.0)
    with pytest.raises(ValueError, match="concurrency"):
        serve_config(build_parser().parse_args(["demo", "--ckpt", "x", "--concurrency", "0"]))


def test_upload_checks(clip, tmp_path) -> None:
    cfg = ServeConfig()
    check_upload(clip, "video", cfg)  # a real clip passes
    with pytest.raises(UploadRejected, match="too long"):
        check_upload(clip, "video", ServeConfig(max_duration_s=1.0))
    with pytest.raises(UploadRejected, match="too large"):
        check_upload(clip, "video", ServeConfig(max_upload_mb=0.01))
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(UploadRejected, match="could not be read as an image"):
        check_upload(fake, "image", cfg)
    with pytest.raises(UploadRejected, match="not a video file"):
        check_upload(fake, "video", cfg)
    with pytest.raises(UploadRejected, match="has no audio stream|not a valid media"):
        check_upload(clip, "audio", cfg)  # the synthetic clips are silent


def test_examples_come_from_the_checkpoint_test_split(assistant, clip, tmp_path) -> None:
    examples = example_clips(assistant, ServeConfig())
    assert examples and all(Path(p).is_file() for p, _ in examples)
    assert {lbl.split(" (")[1].rstrip(")") for _, lbl in examples} == LEVELS  # every level represented
    (tmp_path / "a.mp4").write_bytes(clip.read_bytes())
    (tmp_path / "readme.txt").write_text("x")
    assert example_clips(assistant, ServeConfig(examples=str(tmp_path))) == [(str(tmp_path / "a.mp4"), "a.mp4")]


# --------------------------------------------------------------------------- requests


def test_rate_a_clip_then_ask_a_follow_up(client, assistant, served, clip) -> None:
    label, level, feedback, history, status = rate(client, clip)
    probs = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(probs) == LEVELS and abs(sum(probs.values()) - 1.0) < 1e-4
    best = max(probs, key=probs.get)
    assert label["label"] == best and level.startswith(best) and status.startswith("Done")
    # the same numbers and words as the CLI's inference path
    media = assistant.load_video(clip)
    expected = assistant.rate(media)
    assert all(abs(probs[k] - expected[k]) < 1e-5 for k in LEVELS)
    question = served[1].feedback_question
    assert feedback == assistant.ask(question, media, max_new_tokens=TOKENS)
    assert [m["role"] for m in history] == ["user", "assistant"] and text_of(history[0]) == question

    history, box, status = client.predict("How is the timing?", gradio_client.handle_file(str(clip)), None, *GEN,
                                          api_name="/chat")
    assert status == "Done." and box == ""  # same clip: the conversation goes on
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    turns = [{"from": "human", "value": assistant.with_placeholders(question, media)},
             {"from": "gpt", "value": feedback}, {"from": "human", "value": "How is the timing?"}]
    assert text_of(history[-1]) == assistant.reply(turns, media, max_new_tokens=TOKENS)


def test_eight_concurrent_requests_all_succeed(served, clip) -> None:
    url = served[0].local_url

    def ask(i: int):
        c = gradio_client.Client(url, verbose=False)
        return c.predict(f"Question {i % 2}: how skilled is this athlete?", gradio_client.handle_file(str(clip)),
                         None, *GEN, api_name="/chat")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, range(8)))
    assert all(status == "Done." and len(history) == 2 for history, _, status in results)
    # greedy answers do not depend on what ran alongside them
    for i in (0, 1):
        assert len({text_of(results[j][0][-1]) for j in range(i, 8, 2)}) == 1


def test_rejects_non_media_and_oversize_uploads_readably(client, clip, tmp_path) -> None:
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are my training notes, not a video\n" * 20)
    label, level, _, _, status = rate(client, fake)
    assert "notes.mp4 could not be read as a video" in status and level == "" and not label.get("confidences")

    big = tmp_path / "big.mp4"
    big.write_bytes(clip.read_bytes() + os.urandom(int(0.3 * 1024 * 1024)))  # over the 0.25 MB limit
    _, _, _, _, status = rate(client, big)
    assert "big.mp4 is too large" in status and "0.25 MB" in status

    history, box, status = client.predict("hi", gradio_client.handle_file(str(fake)), None, *GEN, api_name="/chat")
    assert "could not be read as a video" in status and box == "hi" and history == []

    # the app is still fine after the rejections
    label, *_ , status = rate(client, clip)
    assert status.startswith("Done") and len(label["confidences"]) == 4


@pytest.mark.parametrize("audio", [False, True])
def test_media_inputs_follow_the_checkpoint(audio, tmp_path) -> None:
    """Image input always; audio input only when the model has the audio branch. Nothing is loaded."""
    from types import SimpleNamespace

    tokens = {"<video>": 16, "<image>": 2, **({"<audio>": 3} if audio else {})}
    cfg = SimpleNamespace(eval=SimpleNamespace(labels=sorted(LEVELS)), preset="stub",
                          data=SimpleNamespace(test=None, media_root=None))
    stub = SimpleNamespace(placeholder_tokens=tokens, cfg=cfg, ckpt=tmp_path / "run" / "checkpoint-1")
    config = build_demo(stub, ServeConfig()).get_config_file()  # type: ignore[arg-type]
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {"video-input", "image-input", "rate-btn", "rating", "chat"} <= ids
    assert ("audio-input" in ids) is audio
