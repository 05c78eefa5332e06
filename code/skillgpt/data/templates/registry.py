"""The named templates (`model.llm.template`): every family registered once, looked up by name."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from skillgpt.data.templates.kinds import (
    ChatTemplate, ConversationTemplate, Llama2Template, PieceTemplate, SeparatorTemplate, WithSystem,
)
from skillgpt.data.templates.messages import VICUNA_V0_SYSTEM, VICUNA_V1_SYSTEM


_REGISTRY: dict[str, ConversationTemplate] = {}


def register_template(template: ConversationTemplate) -> ConversationTemplate:
    """Add a template to the registry under ``template.name`` (replacing one of the same name)."""
    _REGISTRY[template.name] = template
    return template


register_template(
    SeparatorTemplate(  # PandaGPT: "### Human: {msg}\n### Assistant: {reply}\n###"
        name="vicuna_v0",
        system=VICUNA_V0_SYSTEM,
        system_sep="\n",
        first_user_prefix="### Human: ",
        user_prefix=" Human: ",  # the previous reply's "\n###" terminator supplies the "###"
        assistant_prefix="\n### Assistant:",
        terminator="\n###",
        stops=("###",),
    )
)
register_template(
    SeparatorTemplate(  # LLaVA / Vicuna v1.1: "USER: {msg} ASSISTANT: {reply}</s>"
        name="vicuna_v1",
        system=VICUNA_V1_SYSTEM,
        system_sep=" ",
        first_user_prefix="USER: ",
        user_prefix="USER: ",
        assistant_prefix=" ASSISTANT:",
        terminator="{eos}",
        stops=("{eos}", "USER:"),
    )
)
# SQ-LLaVA: vicuna_v1 whose user questions are supervised as well
register_template(replace(_REGISTRY["vicuna_v1"], name="vicuna_v1_sq", supervise_questions=True))
# VideoGPT+ (conversation.py conv_phi3_instruct, MPT separators): "<|system|>\n{sys}<|end|>\n<|user|>\n{msg}<|end|>
# \n<|assistant|>\n{reply}<|end|>..."; the original's tokenizer_image_token puts the tokenizer's BOS first.
register_template(
    SeparatorTemplate(
        name="phi3_instruct",
        system="You are a helpful AI assistant.",
        system_prefix="<|system|>\n",
        system_sep="<|end|>",
        first_user_prefix="\n<|user|>\n",
        user_prefix="\n<|user|>\n",
        assistant_prefix="<|end|>\n<|assistant|>\n",
        reply_prefix="",
        terminator="<|end|>",
        stops=("<|end|>", "{eos}"),
    )
)
register_template(Llama2Template())
register_template(ChatTemplate())
# PandaGPT (openllama.py build_one_instance / prompt_wrap; web_demo.py for generation): no system prompt.
register_template(PieceTemplate(
    name="pandagpt", media_open="### Human: <Img>", media_close="</Img> ", text_user="### Human: ",
    later_user="Human: ", assistant="\n### Assistant:", answer_end="\n###",
    gen_user_first="### Human: ", gen_user=" Human: ", gen_assistant="\n### Assistant:",
    gen_reply="\n### Assistant: ", gen_answer_end="\n###", system_sep="\n", stops=("###",)))
MINIGPT4_SYSTEM = ("Give the following image: <Img>ImageContent</Img>. You will be able to see the image once I "
                   "provide it to you. Please answer my questions.")
# MiniGPT-4 (Vicuna v0): training '###Human: {} ###Assistant: ' + answer + '###' (minigpt_base.py), later
# turns '<s>' + that; generation: CONV_VISION_Vicuna0 of conversation.py.
register_template(PieceTemplate(
    name="minigpt4", media_open="###Human: <Img>", media_close="</Img> ", text_user="###Human: ",
    later_user="{bos}###Human: ", assistant=" ###Assistant: ", answer_end="###",
    gen_user_first="Human: ", gen_user="Human: ", gen_assistant="###Assistant: ", gen_reply="###Assistant: ",
    gen_answer_end="###", system=MINIGPT4_SYSTEM, system_sep="###", stops=("###", "{eos}")))
# MiniGPT-4 (Llama-2): '[INST] {} [/INST] ' + answer + '</s>'; generation: CONV_VISION_LLama2.
register_template(PieceTemplate(
    name="minigpt4_llama2", media_open="[INST] <Img>", media_close="</Img> ", text_user="[INST] ",
    later_user="{bos}[INST] ", assistant=" [/INST] ", answer_end="{eos}",
    gen_user_first="{bos}[INST] ", gen_user="{bos}[INST] ", gen_assistant=" [/INST] ", gen_reply=" [/INST] ",
    gen_answer_end="", system=MINIGPT4_SYSTEM, stops=("{eos}", "[INST]")))
# MiniGPT-v2 (chat_template: '[INST] {} [/INST]' + answer + '</s>'); generation: demo_v2.py's CONV_VISION,
# whose '<s>' after the tokenizer's BOS the original also feeds.
register_template(PieceTemplate(
    name="minigpt_v2", media_open="[INST] <Img>", media_close="</Img> ", text_user="[INST] ",
    later_user="{bos}[INST] ", assistant=" [/INST]", answer_end="{eos}",
    gen_user_first="{bos}[INST] ", gen_user="{bos}[INST] ", gen_assistant=" [/INST]", gen_reply=" [/INST]",
    gen_answer_end="", stops=("{eos}", "[INST]")))


def llm_template(llm_cfg: Any) -> ConversationTemplate:
    """The template a model config names (model.llm.template), with model.llm.system_prompt when set."""
    template = get_template(llm_cfg.template)
    system = getattr(llm_cfg, "system_prompt", None)
    return template if system is None else WithSystem(template, system)


def template_names() -> list[str]:
    return sorted(_REGISTRY)


def get_template(name: str | ConversationTemplate) -> ConversationTemplate:
    """Registered template by name (a template instance is returned as is); KeyError lists known names."""
    if isinstance(name, ConversationTemplate):
        return name
    if name not in _REGISTRY:
        raise KeyError(f"unknown conversation template {name!r}; known: {', '.join(template_names())}")
    return _REGISTRY[name]
