"""The Gradio demo as clients use it: a real server on a free local port, driven by gradio_client."""
from __future__ import annotations

import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio", reason="gradio is in requirements.txt")
gradio_client = pytest.importorskip("gradio_client")

from skillgpt.serve.access import exposure_warnings, is_loopback, parse_auth, request_line  # noqa: E402
from skillgpt.serve.demo import (  # noqa: E402
    ServeConfig, SkillDemo, UploadRejected, build_demo, check_upload, example_clips, launch, launch_kwargs,
    serve_config,
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
def request_log() -> list[str]:
    return []


@pytest.fixture(scope="module")
def served(assistant, request_log):
    """The demo on a free port with the default host/share (limits small enough to test); its request
    log lines go to `request_log`."""
    cfg = ServeConfig(port=free_port(), concurrency=4, max_upload_mb=0.25, max_new_tokens=TOKENS)
    demo = launch(build_demo(assistant, cfg, log=request_log.append), cfg, block=False)
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
    assert examples and all(len(paths) == 1 and Path(paths[0]).is_file() for paths, _ in examples)
    assert {lbl.split(" (")[1].rstrip(")") for _, lbl in examples} == LEVELS  # every level represented
    (tmp_path / "a.mp4").write_bytes(clip.read_bytes())
    (tmp_path / "readme.txt").write_text("x")
    assert example_clips(assistant, ServeConfig(examples=str(tmp_path))) == [([str(tmp_path / "a.mp4")], "a.mp4")]


# --------------------------------------------------------------------------- requests


def test_rate_a_clip_then_ask_a_follow_up(client, assistant, served, clip, request_log) -> None:
    label, level, feedback, history, status = rate(client, clip)
    probs = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(probs) == LEVELS and abs(sum(probs.values()) - 1.0) < 1e-4
    best = max(probs, key=probs.get)
    assert label["label"] == best and level.startswith(best) and status.startswith("Done")
    # the same numbers and words as the CLI's inference path
    media = assistant.load_video(clip)
    expected = assistant.rate(media)
    assert all(abs(probs[k] - expected[k]) < 1e-5 for k in LEVELS)
    # two turns, as the skill data is trained: the rating question, then the feedback question, whose answer
    # (the model's own, a second turn through SkillAssistant.reply) is the coaching feedback
    rating_q, feedback_q = assistant.cfg.eval.question, served[1].feedback_question
    answer = assistant.ask(rating_q, media, max_new_tokens=TOKENS)
    turns = [{"from": "human", "value": assistant.with_placeholders(rating_q, media)},
             {"from": "gpt", "value": answer}, {"from": "human", "value": feedback_q}]
    assert feedback == assistant.reply(turns, media, max_new_tokens=TOKENS)
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    assert [text_of(m) for m in history] == [rating_q.replace("<video>", "").strip(), answer, feedback_q, feedback]

    history, box, status = client.predict("How is the timing?", gradio_client.handle_file(str(clip)), None, *GEN,
                                          api_name="/chat")
    assert status == "Done." and box == ""  # same clip: the conversation goes on
    assert [m["role"] for m in history] == ["user", "assistant"] * 3
    turns += [{"from": "gpt", "value": feedback}, {"from": "human", "value": "How is the timing?"}]
    assert text_of(history[-1]) == assistant.reply(turns, media, max_new_tokens=TOKENS)

    # one log line per request: action, client, user, files, time, outcome
    rate_line = next(line for line in request_log if " rate " in line)
    assert f"client=127.0.0.1 user=- files={clip.name} (" in rate_line and rate_line.endswith(f"ok level={best}")
    chat_line = next(line for line in request_log if " chat " in line)
    assert "question=18 chars" in chat_line and chat_line.endswith("s ok")


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


def test_rejects_non_media_and_oversize_uploads_readably(client, clip, tmp_path, request_log) -> None:
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

    # the app is still fine after the rejections, and the log says why each was refused
    assert any(" rate " in line and "error: notes.mp4 could not be read as a video" in line for line in request_log)
    label, *_ , status = rate(client, clip)
    assert status.startswith("Done") and len(label["confidences"]) == 4


@pytest.mark.parametrize("audio", [False, True])
def test_media_inputs_follow_the_checkpoint(audio, tmp_path) -> None:
    """Image input always; audio input only when the model has the audio branch. Nothing is loaded."""
    stub = stub_assistant(tmp_path)
    stub.placeholder_tokens = {"<video>": 16, "<image>": 2, **({"<audio>": 3} if audio else {})}
    config = build_demo(stub, ServeConfig()).get_config_file()  # type: ignore[arg-type]
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {"video-input", "image-input", "rate-btn", "rating", "chat"} <= ids
    assert ("audio-input" in ids) is audio


# --------------------------------------------------------------------------- views, access, logging


def stub_assistant(tmp_path: Path, views: list[str] | None = None, test: Path | None = None):
    """An assistant with the demo-facing attributes only (nothing is loaded): `load` returns its record."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(eval=SimpleNamespace(labels=sorted(LEVELS), question="<video> Rate it."), preset="stub",
                          data=SimpleNamespace(test=str(test) if test else None, media_root=None, views=views))
    return SimpleNamespace(placeholder_tokens={"<video>": 16, "<image>": 2}, cfg=cfg,
                           ckpt=tmp_path / "run" / "checkpoint-1", load=lambda record: [("record", record)],
                           encode_media=lambda media: media)


def test_multi_view_model_gets_one_upload_per_view(clip, tmp_path) -> None:
    stub = stub_assistant(tmp_path, views=["ego", "exo1"])
    ids = {c["props"].get("elem_id") for c in build_demo(stub, ServeConfig()).get_config_file()["components"]}
    assert {"video-input-ego", "video-input-exo1", "image-input"} <= ids and "video-input" not in ids
    app = SkillDemo(stub, ServeConfig(), log=lambda line: None)  # type: ignore[arg-type]
    assert app.slots == [("video", "ego"), ("video", "exo1"), ("image", None)]
    other = tmp_path / "exo.mp4"
    other.write_bytes(clip.read_bytes())
    _, media = app.media([str(clip), str(other), None])
    assert media == [("record", {"video": {"ego": str(clip), "exo1": str(other)}})]  # the sample's view dict
    with pytest.raises(UploadRejected, match="every view: exo1 missing"):
        app.media([str(clip), None, None])


def test_multi_view_examples_come_from_view_dict_samples(clip, tmp_path) -> None:
    import json

    for name in ("a_ego.mp4", "a_exo1.mp4", "b_ego.mp4"):
        (tmp_path / name).write_bytes(clip.read_bytes())
    test = tmp_path / "test.json"
    test.write_text(json.dumps([
        {"id": "a", "label": "Novice", "video": {"ego": "a_ego.mp4", "exo1": "a_exo1.mp4"}},
        {"id": "b", "label": "Novice", "video": {"ego": "b_ego.mp4", "exo1": "b_missing.mp4"}},  # a file missing
        {"id": "c", "label": "Novice", "video": "a_ego.mp4"}]))  # not a view dict
    stub = stub_assistant(tmp_path, views=["ego", "exo1"], test=test)
    assert example_clips(stub, ServeConfig()) == [([str(tmp_path / "a_ego.mp4"), str(tmp_path / "a_exo1.mp4")],
                                                   "a (Novice)")]
    with pytest.raises(ValueError, match="one clip per view"):
        example_clips(stub, ServeConfig(examples=str(tmp_path)))


def test_auth_and_exposure_rules() -> None:
    assert parse_auth(None) is None and parse_auth("coach:a:b") == ("coach", "a:b")
    for bad in ("coach", ":pw", "coach:"):
        with pytest.raises(ValueError, match="user:password"):
            parse_auth(bad)
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.1.1", "localhost", "::1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "::", "myhost.example"))
    assert exposure_warnings("127.0.0.1", False, False) == []
    (open_warning,) = exposure_warnings("0.0.0.0", False, False)
    assert "beyond this machine" in open_warning and "--auth user:password" in open_warning
    assert "--auth user:password" not in exposure_warnings("0.0.0.0", False, True)[0]
    assert "public link" in exposure_warnings("127.0.0.1", True, False)[0]
    assert ServeConfig(auth="coach:secret").__repr__().count("secret") == 0  # never printed with the config
    kwargs = launch_kwargs(ServeConfig(auth="coach:secret"))
    assert kwargs["auth"] == ("coach", "secret") and launch_kwargs(ServeConfig())["auth"] is None
    from skillgpt.cli import build_parser

    args = build_parser().parse_args(["demo", "--ckpt", "x", "--auth", "coach:secret", "--feedback-question", "Tips?"])
    assert (serve_config(args).auth, serve_config(args).feedback_question) == ("coach:secret", "Tips?")
    with pytest.raises(ValueError, match="user:password"):
        serve_config(build_parser().parse_args(["demo", "--ckpt", "x", "--auth", "nopassword"]))


def test_launch_warns_when_bound_beyond_loopback(capsys) -> None:
    """`launch` prints the warning before serving (a stand-in server: nothing binds 0.0.0.0 in the test)."""
    from types import SimpleNamespace

    calls = []
    fake = SimpleNamespace(launch=lambda **kw: calls.append(kw), local_url="http://0.0.0.0:7860/", share_url=None)
    launch(fake, ServeConfig(host="0.0.0.0"), block=False)  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert calls[0]["server_name"] == "0.0.0.0" and "warning: --host 0.0.0.0 serves the demo beyond" in err
    launch(fake, ServeConfig(), block=False)  # type: ignore[arg-type]
    assert "warning" not in capsys.readouterr().err


def test_busy_port_names_the_port_flag(served) -> None:
    demo, cfg = served
    with gr.Blocks() as other:
        gr.Markdown("x")
    with pytest.raises(OSError, match=f"127.0.0.1:{cfg.port}: the port is in use.*--port N"):
        launch(other, ServeConfig(port=cfg.port), block=False)


def test_auth_requires_the_login_and_logs_the_user(assistant, clip) -> None:
    lines: list[str] = []
    cfg = ServeConfig(port=free_port(), auth="coach:s3cret:x", max_new_tokens=TOKENS)
    demo = launch(build_demo(assistant, cfg, log=lines.append), cfg, block=False)
    try:
        with pytest.raises(Exception):
            gradio_client.Client(demo.local_url, verbose=False).predict(
                "hi", gradio_client.handle_file(str(clip)), None, *GEN, api_name="/chat")
        client = gradio_client.Client(demo.local_url, auth=("coach", "s3cret:x"), verbose=False)
        history, _, status = client.predict("hi", gradio_client.handle_file(str(clip)), None, *GEN, api_name="/chat")
        assert status == "Done." and len(history) == 2
    finally:
        demo.close()
    assert any(" chat client=127.0.0.1 user=coach " in line for line in lines)


def test_request_line_format(clip) -> None:
    from types import SimpleNamespace

    import re
    import time

    request = SimpleNamespace(client=SimpleNamespace(host="10.0.0.7"), username=None)
    size = f"{clip.stat().st_size / 1024 / 1024:.1f} MB"
    line = request_line("rate", request, [str(clip), None], started=time.monotonic(), outcome="ok")
    assert re.fullmatch(rf"\[demo\] \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ rate client=10\.0\.0\.7 user=- "
                        rf"files={re.escape(clip.name)} \({size}\) 0\.\d\ds ok", line), line
    assert request_line("chat", None, [None], time.monotonic(), "cancelled").split(" files=")[1].startswith("- ")
