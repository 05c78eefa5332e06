"""The demo in a real browser: headless Chromium (the system's, never a downloaded one) driven by Playwright.

Saves a screenshot of the populated page to test-artifacts/demo.png (docs/demo.png is taken from it). A second
app in the same browser serves a model with signal tokens: its replies' image, video and audio show in the page.
Skipped only when no Chromium binary can be found (scripts/test.sh installs Debian's `chromium`).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="gradio is in requirements.txt")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements-test.txt")

from skillgpt.serve.demo import ServeConfig, build_demo, launch  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting.*"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated.*")]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "test-artifacts" / "demo.png"
LEVELS = ("Novice", "Early Expert", "Intermediate Expert", "Late Expert")
TIMEOUT_MS = 60_000


def find_chromium() -> str | None:
    """$SKILLGPT_CHROMIUM, else the first Chromium/Chrome on PATH."""
    explicit = os.environ.get("SKILLGPT_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


CHROMIUM = find_chromium()
if CHROMIUM is None:  # decided before any fixture trains a model
    pytest.skip("no Chromium found: install the Debian `chromium` package (scripts/test.sh does) "
                "or set SKILLGPT_CHROMIUM to the browser binary", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield b
        b.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def url(trained_run):
    from skillgpt.inference.assistant import SkillAssistant

    cfg = ServeConfig(port=free_port(), max_new_tokens=16)
    demo = launch(build_demo(SkillAssistant(trained_run.stage_2, device="cpu"), cfg), cfg, block=False)
    yield demo.local_url
    demo.close()


# the generated media: 16 x 24 pixels, 3 frames at 6 fps, 0.1 s of audio, one denoising step without guidance
MEDIA_SETTINGS = ("generation.decoders.image.height=16", "generation.decoders.image.width=24",
                  "generation.decoders.video.height=16", "generation.decoders.video.width=24",
                  "generation.decoders.video.num_frames=3", "generation.decoders.video.fps=6",
                  "generation.decoders.audio.length_s=0.1",
                  *(f"generation.decoders.{m}.{k}=1" for m in ("image", "video", "audio") for k in ("steps", "guidance")))


@pytest.fixture(scope="module")
def media_url(generation_checkpoint, tiny_decoders, tmp_path_factory):
    """The demo of a model with signal tokens (tests/conftest.py), its decoders the tiny random ones; the app may
    serve its media folder."""
    from skillgpt.inference.assistant import SkillAssistant

    media_dir = tmp_path_factory.mktemp("demo-media")
    overrides = [f"generation.media_dir={media_dir}", *MEDIA_SETTINGS,
                 *(f"generation.decoders.{m}.path={p}" for m, p in tiny_decoders.items())]
    cfg = ServeConfig(port=free_port(), max_new_tokens=12)
    assistant = SkillAssistant(generation_checkpoint, device="cpu", overrides=overrides)
    demo = launch(build_demo(assistant, cfg), cfg, block=False)
    assert str(media_dir) in demo.allowed_paths
    yield demo.local_url
    demo.close()


def test_rate_chat_and_reject_in_a_browser(browser, url, trained_run, tmp_path) -> None:
    expect = sync_api.expect
    clip = sorted((trained_run.workspace.data / "videos" / "test").glob("*.mp4"))[0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    status = page.locator("#status textarea")
    try:
        page.goto(url)
        expect(page.get_by_text("SkillGPT: rate an athlete's skill")).to_be_visible()

        # upload a clip and rate it: the panel shows the four levels with percentages and the predicted level
        page.locator("#video-input input[type=file]").set_input_files(str(clip))
        expect(status).to_have_value(re.compile("^Ready"), timeout=TIMEOUT_MS)
        page.locator("#rate-btn").click()
        expect(status).to_have_value(re.compile("^Done"), timeout=TIMEOUT_MS)
        rating = page.locator("#rating").inner_text()
        assert all(level in rating for level in LEVELS) and len(re.findall(r"\d+%", rating)) == 4
        level = page.locator("#level textarea").input_value()
        assert any(level.startswith(lvl) for lvl in LEVELS)
        feedback = page.locator("#feedback textarea").input_value().strip()
        assert feedback  # generated coaching feedback: the answer to the second question
        bots = page.locator("#chat [data-testid='bot']")
        expect(bots).to_have_count(2)  # the rating question's answer, then the feedback question's

        # a follow-up question about the same clip, answered in the chat
        page.locator("#chat-input textarea").fill("How is the timing?")
        page.locator("#send-btn").click()
        expect(status).to_have_value("Done.", timeout=TIMEOUT_MS)
        expect(bots).to_have_count(3)
        expect(page.locator("#chat [data-testid='user']").last).to_contain_text("How is the timing?")
        assert bots.last.inner_text().strip()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT), full_page=True)

        # a text file dressed up as a video is refused with a readable message (status box and a toast)
        page.reload()
        fake = tmp_path / "notes.mp4"
        fake.write_text("my training notes, not a video\n" * 20)
        page.locator("#video-input input[type=file]").set_input_files(str(fake))
        expect(status).to_have_value(re.compile("notes.mp4 could not be read as a video"), timeout=TIMEOUT_MS)
        expect(page.get_by_text(re.compile("notes.mp4 could not be read as a video")).first).to_be_visible()
    finally:
        page.close()
    assert SCREENSHOT.stat().st_size > 10_000


def test_generated_image_video_and_audio_show_in_the_page(browser, media_url, scripted_replies) -> None:
    expect = sync_api.expect
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    status = page.locator("#status textarea")
    shown = {m: page.locator(f"#generated-{m}") for m in ("image", "video", "audio")}
    try:
        page.goto(media_url)
        expect(page.locator("#chat-input textarea")).to_be_visible()
        for box in shown.values():  # no media before a reply asks for them
            expect(box).to_be_hidden()

        # a reply with the image, video and audio signal tokens (scripted: the model itself is untrained)
        scripted_replies(["Here", "[IMG0]", None, "[VID0]", None, "[AUD0]", None, "</s>"])
        page.locator("#chat-input textarea").fill("Show me the movement.")
        page.locator("#send-btn").click()
        expect(status).to_have_value("Done.", timeout=TIMEOUT_MS)
        expect(page.locator("#chat [data-testid='bot']").last).to_contain_text("[IMG0]")
        image = shown["image"].locator("img")
        expect(image).to_be_visible()
        assert image.evaluate("img => img.complete && [img.naturalWidth, img.naturalHeight]") == [24, 16]
        video = shown["video"].locator("video")
        expect(video).to_be_visible()
        assert video.evaluate("""v => new Promise(done => {
            const report = () => done([v.videoWidth, v.videoHeight]);
            if (v.readyState >= 1) report(); else v.addEventListener("loadedmetadata", report);
        })""") == [24, 16]
        expect(shown["audio"]).to_be_visible()
        expect(shown["audio"].get_by_role("button", name="Play", exact=True)).to_be_visible()  # Gradio's waveform player
        link = shown["audio"].locator("[data-testid='download-link']").get_attribute("href")
        assert link and link.endswith("/demo-audio.wav")
        wav = page.request.get(link).body()
        assert wav[:4] == b"RIFF" and len(wav) == 44 + 2 * 1600  # 0.1 s of 16-bit mono at 16 kHz

        # the next reply has none: the players are hidden again
        scripted_replies(["Fine", "</s>"])
        page.locator("#chat-input textarea").fill("And now just in words?")
        page.locator("#send-btn").click()
        expect(status).to_have_value("Done.", timeout=TIMEOUT_MS)
        for box in shown.values():
            expect(box).to_be_hidden()
    finally:
        page.close()
