"""A stage-2 adapter is a standard PEFT folder: plain peft on the base LLM gives SkillGPT's logits."""
from __future__ import annotations

import json

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from skillgpt.checkpoint.delta import list_checkpoints
from skillgpt.data.media import collate_media
from skillgpt.inference.assistant import SkillAssistant


def test_plain_peft_matches_skillgpt_loading(trained_run) -> None:
    ckpt = list_checkpoints(trained_run.stage_2)[-1]
    adapter = ckpt / "adapter"
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    # the tiny stage 1 trained the LLM fully, so stage 2's base is stage 1's saved llm/ folder
    assert base_path.endswith("llm") and (list_checkpoints(trained_run.stage_1)[-1] / "llm").samefile(base_path)

    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(adapter)).eval()
    ours = SkillAssistant(ckpt, device="cpu")
    ids = ours.tokenizer("### Human: how was the dribble?\n### Assistant:", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = plain(input_ids=ids).logits
        got = ours.model.causal_lm(input_ids=ids).logits
        # with visual tokens spliced in: the same inputs_embeds through both models
        clip = sorted((trained_run.workspace.data / "videos" / "test").glob("*.mp4"))[0]
        tok = ours.encode([{"from": "human", "value": "<video> Rate this."}], True)
        vid_ids = torch.tensor([tok["input_ids"]])
        embeds = ours.model.embed(vid_ids, collate_media([ours.load_video(clip)]))
        expected_v = plain(inputs_embeds=embeds).logits
        got_v = ours.model.causal_lm(inputs_embeds=embeds).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_v, expected_v, rtol=1e-5, atol=1e-5)
    # and the adapter really changes the model (otherwise the comparison above proves nothing)
    with torch.no_grad():
        base_only = AutoModelForCausalLM.from_pretrained(base_path).eval()(input_ids=ids).logits
    assert (base_only - expected).abs().max() > 1e-4
