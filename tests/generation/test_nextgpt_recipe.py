"""The three-stage NExT-GPT recipe as files (config/nextgpt/, dsconfig/nextgpt/, scripts/train.sh --recipe): stage 3
(instruction tuning: LoRA + input projector + output projectors on mixed text / generate answers) runs from stage
2, which ran from stage 1; its checkpoint keeps all three trained parts and loads its ancestors' parts."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from skillgpt.checkpoint.lineage import ancestry, checkpoint_config
from skillgpt.cli import main
from skillgpt.config import load_config, load_resolved
from skillgpt.generation.recipe_data import tx_samples

REPO = Path(__file__).resolve().parents[2]


def test_stage_three_trains_on_mixed_answers_and_keeps_every_part(nextgpt_run, tiny_decoders, scripted_replies,
                                                                  tmp_path, capsys) -> None:
    assert main(["train", str(REPO / "config" / "nextgpt" / "stage_3.yaml"),
                 *nextgpt_run.overrides(3, "train.max_steps=1", "train.micro_batch_size=4")]) == 0
    ckpt = nextgpt_run.root / "stage_3" / "checkpoint-1"
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    assert (ckpt / "projector.safetensors").is_file() and (ckpt / "generation.safetensors").is_file()
    cfg = load_resolved(ckpt / "config.yaml")
    assert (cfg.stage, cfg.freeze.llm, cfg.freeze.projector, cfg.freeze.generation) == (3, "lora", "full", "full")
    assert cfg.train.parent.parts == ["generation", "projector", "llm"]  # stage 2's own, then stage 1's
    # stage 1's full LLM is still needed (nothing in stage 3 replaces it), so the whole chain is loaded
    parent = Path(checkpoint_config(ckpt).train.init_from)
    assert [p.parent.name for p in ancestry(parent)] == ["stage_1", "stage_2"]

    # the mixed test file: skill Q&A (text answers) and requests answered with signal tokens, evaluated whole
    capsys.readouterr()
    assert main(["eval", "--ckpt", str(ckpt), "--out", str(tmp_path / "eval"), "--limit", "4"]) == 0
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())["summary"]
    assert (summary["n_text"], summary["n_generate"]) == (2, 2) and math.isfinite(summary["text_loss"])
    assert summary["per_modality"]["image"]["n"] == 2
    assert "retrieval top-1" in capsys.readouterr().out

    # and infer from the stage-3 checkpoint draws the reply's image with the decoder whose captions were cached
    scripted_replies(["Here", "[IMG0]", None, None, None, "</s>"])  # [IMG1..3]: the signal-run rule completes it
    clip = sorted((nextgpt_run.workspace.data / "videos" / "test").glob("*.mp4"))[0]
    assert main(["infer", "--ckpt", str(ckpt), "--video", str(clip), "Show the movement.",
                 "--image-decoder", str(tiny_decoders["image"]), "--media-dir", str(tmp_path / "media"),
                 "--set", "generation.decoders.image.steps=1", "--set", "generation.decoders.image.height=16",
                 "--set", "generation.decoders.image.width=24"]) == 0
    printed = capsys.readouterr().out
    image = Path(next(line.split(": ", 1)[1] for line in printed.splitlines() if line.startswith("image: ")))
    from PIL import Image

    assert image.parent == tmp_path / "media" and Image.open(image).size == (24, 16)


def test_recipe_data_keeps_the_level_out_of_the_requests() -> None:
    samples = tx_samples([{"id": "a", "caption": "A gymnast swings.", "label": "Novice"}], "image", 4, reply=True)
    assert samples == [{"id": "tx-a", "generate": {"modality": "image", "caption": "A gymnast swings."},
                        "conversations": [{"from": "human", "value": "Show the movement: A gymnast swings."},
                                          {"from": "gpt", "value": "Here is the movement. [IMG0][IMG1][IMG2][IMG3]"}]}]


def test_recipe_stage_files_share_the_config_folder(tmp_path) -> None:
    """config/nextgpt/stage_N.yaml take base.yaml and the presets of config/; the freeze policy of each stage."""
    (tmp_path / "config.json").write_text("{}")
    policy = {}
    for stage in (1, 2, 3):
        cfg = load_config(REPO / "config" / "nextgpt" / f"stage_{stage}.yaml", [f"model.llm.path={tmp_path}"])
        assert cfg.preset == "tiny-nextgpt" and cfg.model.generation.image_tokens == 4 and cfg.stage == stage
        assert cfg.eval.labels == ["Novice", "Early Expert", "Intermediate Expert", "Late Expert"]  # base.yaml
        policy[stage] = (cfg.freeze.projector, cfg.freeze.llm, cfg.freeze.generation)
    assert policy == {1: ("full", "full", "frozen"), 2: ("frozen", "frozen", "full"), 3: ("full", "lora", "full")}


def test_train_script_recipe_selector() -> None:
    run = lambda *a: subprocess.run(["bash", "scripts/train.sh", *a], cwd=REPO, capture_output=True, text=True)  # noqa: E731
    done = run("--recipe", "nextgpt", "--dry-run", "3", "preset=nextgpt-vicuna-7b")
    assert done.returncode == 0, done.stderr
    assert f"{REPO}/config/nextgpt/stage_3.yaml train.deepspeed_config={REPO}/dsconfig/nextgpt/stage_3.json " \
           "preset=nextgpt-vicuna-7b" in done.stdout
    assert f"{REPO}/config/stage_2.yaml" in run("--dry-run", "2").stdout  # the skill recipe, as before
    bad = run("--recipe", "nope", "1")
    assert bad.returncode == 2 and "unknown recipe 'nope' (recipes: skill nextgpt)" in bad.stderr


def test_image_video_and_audio_through_stages_two_and_three_then_infer(tiny_workspace, tiny_decoders,
                                                                        scripted_replies, tmp_path, capsys) -> None:
    """The recipe's decoder side for all three modalities: captions cached with the tiny Stable Diffusion,
    text-to-video and AudioLDM pipelines' own text encoders, stage 2 then stage 3 on image, video and audio
    requests, and infer from stage 3 writes the reply's picture, clip and sound with those pipelines, at the
    configured size and length."""
    import wave

    import av
    from PIL import Image

    captions = json.loads((tiny_workspace.data / "captions_train.json").read_text())
    modalities = ("image", "video", "audio")
    (tmp_path / "tx.json").write_text(json.dumps([s for m in modalities for s in tx_samples(captions, m, 2)]))
    (tmp_path / "instruct.json").write_text(json.dumps([s for m in modalities
                                                        for s in tx_samples(captions, m, 2, reply=True)]))
    for modality in modalities:
        assert main(["cache-caption-embeddings", "--data", str(tmp_path / "tx.json"), "--decoder",
                     str(tiny_decoders[modality]), "--modality", modality, "--out", str(tmp_path / modality)]) == 0
    sizes = ["model.generation.image_tokens=2", "model.generation.video_tokens=2", "model.generation.audio_tokens=2",
             "model.generation.image_shape=[77,32]", "model.generation.video_shape=[77,16]",
             "model.generation.audio_shape=[1,16]",
             "model.generation.hidden_dim=16", "model.generation.heads=2", "model.generation.encoder_layers=1",
             "model.generation.decoder_layers=1"]
    common = [f"model.llm.path={tiny_workspace.llm}", *sizes, "data.val=null", "data.test=null",
              *(f"data.caption_cache.{m}={tmp_path / m}" for m in modalities), "train.eval_every=0", "train.report_to=[]",
              "train.micro_batch_size=8"]
    for stage, data, extra in ((2, "tx.json", ["train.init_from=null", "train.epochs=1"]),
                               (3, "instruct.json", [f"train.init_from={tmp_path / 'stage_2'}", "train.max_steps=1"])):
        assert main(["train", str(REPO / "config" / "nextgpt" / f"stage_{stage}.yaml"), *common,
                     f"data.train={tmp_path / data}", f"train.output_dir={tmp_path / f'stage_{stage}'}",
                     f"train.deepspeed_config={REPO}/dsconfig/nextgpt/stage_{stage}.json", *extra]) == 0
    ckpt = sorted((tmp_path / "stage_3").glob("checkpoint-*"))[-1]
    assert (ckpt / "generation.safetensors").is_file() and (ckpt / "adapter").is_dir()

    scripted_replies(["Here", "[IMG0]", None, "[VID0]", None, "[AUD0]", None, "</s>"])  # [IMG1]...: the signal-run rule
    capsys.readouterr()
    assert main(["infer", "--ckpt", str(ckpt), "--max-new-tokens", "12", "--media-dir", str(tmp_path / "media"),
                 *[a for m in modalities for a in (f"--{m}-decoder", str(tiny_decoders[m]))], "--decoder-steps", "1",
                 *[a for s in ("image.height=16", "image.width=24", "video.height=16", "video.width=24",
                               "video.num_frames=3", "video.fps=6", "audio.length_s=0.1")
                   for a in ("--set", f"generation.decoders.{s}")],
                 "Show the movement as a picture, a clip and a sound."]) == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()[1:])
    assert set(printed) == set(modalities)
    with Image.open(printed["image"]) as image:
        assert image.size == (24, 16)
    with av.open(printed["video"]) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]
    assert len(frames) == 3 and frames[0].shape == (16, 24, 3)
    with wave.open(printed["audio"], "rb") as wav:
        assert wav.getnframes() == int(0.1 * wav.getframerate())
