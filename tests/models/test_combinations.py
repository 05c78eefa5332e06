"""Every encoder / projector / view / modality combination trains a few steps and survives save + load."""
from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from skillgpt.checkpoint.delta import load_trained_parts, save_trained_parts
from skillgpt.models.build import build_model


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny CLIP, SigLIP and VideoMAE folders written with save_pretrained, as users would have them."""
    from transformers import (
        CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel,
        VideoMAEConfig, VideoMAEModel,
    )

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    models = {
        "clip": CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, **small)),
        "siglip": SiglipVisionModel(SiglipVisionConfig(image_size=32, patch_size=8, **small)),
        "videomae": VideoMAEModel(VideoMAEConfig(image_size=32, patch_size=8, num_frames=2, tubelet_size=2, **small)),
    }
    out = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        CLIPImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(root / name)
        out[name] = root / name
    return out


def _write_wav(path: Path, seconds: float, freq: float, rate: int = 22050) -> None:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * math.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


def _dataset_json(ws, tmp_path: Path, kind: str) -> Path:
    """A 4-sample training file derived from the synthetic split: plain, multi-view or video+audio."""
    samples = json.loads((ws.data / "skill_train.json").read_text())[:4]
    videos = [str((ws.data / s["video"]).resolve()) for s in samples]
    for i, s in enumerate(samples):
        video, other = videos[i], videos[(i + 1) % 4]
        if kind == "views":
            s["video"] = {"ego": video, "exo1": other}
        else:
            s["video"] = video
        if kind == "audio":
            wav = tmp_path / f"{i}.wav"
            _write_wav(wav, 3.0, 220.0 * (i + 1))
            s["audio"] = str(wav)
            s["conversations"][0]["value"] = "<audio> " + s["conversations"][0]["value"]
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(samples))
    return path


COMBOS = {
    "imagebind+linear": ("plain", ["model.projector.name=linear"]),
    "imagebind+mlp2x_gelu": ("plain", []),
    "imagebind+pool": ("plain", ["model.encoder.pool=1", "model.projector.name=pool", "model.projector.pool=2"]),
    "imagebind+resampler": ("plain", ["model.projector.name=resampler", "model.projector.num_queries=2"]),
    "imagebind+prototype": ("plain", ["model.projector.name=prototype", "model.projector.num_prototypes=4"]),
    "imagebind+view_fusion": ("views", ["data.views=[ego,exo1]", "model.projector.name=view_fusion"]),
    "imagebind+separate_views": ("views", ["data.views=[ego,exo1]", "data.view_mode=separate"]),
    "clip+pool": ("plain", ["model.encoder.name=hf_image", "model.encoder.path={clip}", "model.encoder.pool=1",
                            "model.projector.name=pool", "model.projector.pool=2"]),
    "videomae+resampler": ("plain", ["model.encoder.name=hf_video", "model.encoder.path={videomae}",
                                     "model.encoder.select_layer=-1", "model.projector.name=resampler",
                                     "model.projector.num_queries=2", "model.encoder.pool=1"]),
    "imagebind+siglip_context": ("plain", ["model.context.enabled=true", "model.context.encoder.path={siglip}",
                                           "model.context.frames=3", "model.context.position=after"]),
    # the audio branch at a test width (the default is ImageBind-huge's: tens of seconds a forward on 2 cores)
    "imagebind+audio": ("audio", ["model.audio.enabled=true", "model.audio.projector.name=linear",
                                  "model.encoder.audio_width=32", "model.encoder.audio_layers=2",
                                  "model.encoder.audio_heads=2"]),
    # the VideoGPT+ presets' shape at a tiny size: InternVideo2 (random, 2 blocks) + CLIP context frames, both
    # through pool projectors that project then pool, VideoGPT+'s frame sampling; pooling levels 1, 2, 4
    **{f"videogpt_plus_pool{pool}": ("plain", [
        "model.encoder.name=internvideo2", "model.encoder.checkpoint=null", "model.encoder.keep_cls=false",
        "model.encoder.vision_width=32", "model.encoder.vision_layers=2", "model.encoder.vision_heads=2",
        "model.encoder.pool=1", "model.projector.name=pool", f"model.projector.pool={pool}",
        "model.projector.pool_after_mlp=true", "model.context.enabled=true", "model.context.encoder.path={clip}",
        "model.context.frames=2", "model.context.projector.pool_after_mlp=true",
        f"model.context.projector.pool={pool}", "data.video.processor=null", "data.video.sampling=videogpt_plus"])
       for pool in (1, 2, 4)},
}


@pytest.mark.parametrize("combo", sorted(COMBOS))
def test_combination_trains_and_reloads(combo, tiny_workspace, first_batch, hf_folders, tmp_path):
    kind, overrides = COMBOS[combo]
    overrides = [o.format(**{k: str(v) for k, v in hf_folders.items()}) for o in overrides]
    train_json = _dataset_json(tiny_workspace, tmp_path, kind)
    cfg = tiny_workspace.config(2, f"combo-{combo}", "train.init_from=null", f"data.train={train_json}",
                                "data.video.num_clips=2", "data.video.resolution=32",
                                "model.encoder.image_size=32", "model.encoder.patch_size=8", *overrides)
    torch.manual_seed(0)
    model, tok, ds, batch = first_batch(cfg)
    n_video = model.num_tokens("video")
    assert (batch["input_ids"] == -200).sum() == len(ds) * n_video * (2 if "separate" in combo else 1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["media"])
        loss.backward()
        assert all(p.grad is not None for p in model.projector.parameters()), "a projector weight got no gradient"
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]

    model.eval()
    with torch.no_grad():
        before = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["media"])
    out = tmp_path / "ckpt"
    save_trained_parts(model, cfg, tok, out)
    fresh, _ = build_model(cfg)
    load_trained_parts(fresh, out)
    fresh.eval()
    with torch.no_grad():
        after = fresh(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["media"])
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
