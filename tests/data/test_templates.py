"""Tests for skillgpt.data.templates with tokenizers built in-process (no hub access)."""
from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from skillgpt.data.templates import (
    IGNORE_INDEX,
    PLACEHOLDERS,
    count_placeholders,
    get_template,
    normalize_messages,
    render,
    template_names,
    tokenize_conversation,
    trim_reply,
)

CORPUS = [
    "A chat between a curious human and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "### Human: What is the proficiency level of this athlete?\n### Assistant: Late Expert\n###",
    "USER: Describe this video. ASSISTANT: A person skis down a steep slope.",
    "[INST] <<SYS>> You are a helpful assistant <</SYS>> What happens in this clip? [/INST]",
    "The athlete is an Early Expert. Novice Intermediate Expert basketball dance cooking",
]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXT_TEMPLATES = ["vicuna_v0", "vicuna_v1", "llama2"]
ALL_TEMPLATES = TEXT_TEMPLATES + ["chat_template"]
BIG = 10_000


def build_tokenizer(style: str = "bytelevel", bos: bool = True) -> PreTrainedTokenizerFast:
    """A small BPE with <unk> <s> </s> <pad> specials, byte-level (GPT-2 like) or metaspace (sentencepiece like)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if style == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
        alphabet = sorted(set("".join(CORPUS) + "\n\u2581"))
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], initial_alphabet=alphabet
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>" if bos else None,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="module", params=["bytelevel", "metaspace"])
def any_tok(request: pytest.FixtureRequest) -> PreTrainedTokenizerFast:
    return tokenizer_for(request.param)


def tokenizer_for(style: str) -> PreTrainedTokenizerFast:
    t = build_tokenizer(style)
    t.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    t.chat_template = CHATML
    return t


@pytest.fixture(scope="module")
def chatml() -> PreTrainedTokenizerFast:
    return tokenizer_for("bytelevel")


def conv(*pairs: str, system: str | None = None, fmt: str = "llava") -> list[dict[str, str]]:
    """Alternating human/gpt turns in LLaVA ("llava") or OpenAI ("openai") format."""
    turns = ([("system", system)] if system is not None else []) + [
        ("human" if i % 2 == 0 else "gpt", text) for i, text in enumerate(pairs)
    ]
    if fmt == "llava":
        return [{"from": r, "value": v} for r, v in turns]
    roles = {"human": "user", "gpt": "assistant", "system": "system"}
    return [{"role": roles[r], "content": v} for r, v in turns]


def supervised_runs(out: dict[str, list[int]]) -> list[list[int]]:
    """Contiguous runs of supervised token ids; also checks labels equal ids where supervised."""
    runs: list[list[int]] = []
    prev = False
    for tid, lab in zip(out["input_ids"], out["labels"]):
        if lab != IGNORE_INDEX:
            assert lab == tid
            if not prev:
                runs.append([])
            runs[-1].append(lab)
        prev = lab != IGNORE_INDEX
    return runs


def expected_replies(name: str, replies: list[str]) -> list[str]:
    return {
        "vicuna_v0": [f" {r}\n###" for r in replies],
        "vicuna_v1": [f" {r}</s>" for r in replies],
        "llama2": [f" {r} </s>" for r in replies],
        "chat_template": [f"{r}<|im_end|>\n" for r in replies],
    }[name]


# --------------------------------------------------------------------------- rendering


def test_render_exact_text(chatml: PreTrainedTokenizerFast) -> None:
    msgs = conv("Hi <video>", "Late Expert", "Why?", "Smooth turns", system="SYS")
    text, spans = render("vicuna_v0", msgs, chatml)
    assert text == (
        "SYS\n### Human: Hi <video>\n### Assistant: Late Expert\n### Human: Why?\n### Assistant: Smooth turns\n###"
    )
    assert [text[a:b] for a, b in spans] == [" Late Expert\n###", " Smooth turns\n###"]
    text, _ = render("vicuna_v1", msgs, chatml)
    assert text == "SYS USER: Hi <video> ASSISTANT: Late Expert</s>USER: Why? ASSISTANT: Smooth turns</s>"
    text, _ = render("llama2", msgs, chatml)
    assert text == (
        "[INST] <<SYS>>\nSYS\n<</SYS>>\n\nHi <video> [/INST] Late Expert </s><s>[INST] Why? [/INST] Smooth turns </s>"
    )
    text, spans = render("chat_template", msgs, chatml)
    assert text.startswith("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\nHi <video><|im_end|>\n")
    assert [text[a:b] for a, b in spans] == ["Late Expert<|im_end|>\n", "Smooth turns<|im_end|>\n"]


def test_default_system_and_empty_system(tok: PreTrainedTokenizerFast) -> None:
    text, _ = render("vicuna_v1", conv("Hi"), tok)
    assert text.startswith("A chat between a curious user") and text.endswith("USER: Hi ASSISTANT:")
    text, _ = render("llama2", conv("Hi", system=""), tok)
    assert text == "[INST] Hi [/INST]"
    text, _ = render("vicuna_v0", conv("Hi", system=""), tok)
    assert text == "### Human: Hi\n### Assistant:"


@pytest.mark.parametrize(
    "name,suffix",
    [("vicuna_v0", "\n### Assistant:"), ("vicuna_v1", " ASSISTANT:"), ("llama2", " [/INST]"),
     ("chat_template", "<|im_start|>assistant\n")],
)
def test_generation_prompt_ends_with_assistant_prefix(chatml: PreTrainedTokenizerFast, name: str, suffix: str) -> None:
    msgs = conv("<video> What level?", "Novice", "And now?")
    text, spans = render(name, msgs, chatml, add_generation_prompt=True)
    assert text.endswith(suffix) and len(spans) == 1
    out = tokenize_conversation(msgs, chatml, name, {"<video>": 3}, BIG, add_generation_prompt=True)
    assert chatml.decode([i for i in out["input_ids"] if i >= 0]).endswith(suffix)
    with pytest.raises(ValueError, match="last turn"):
        render(name, conv("Q", "A"), chatml, add_generation_prompt=True)


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("name", ALL_TEMPLATES)
@pytest.mark.parametrize("fmt", ["llava", "openai"])
def test_labels_cover_exactly_the_replies(any_tok: PreTrainedTokenizerFast, name: str, fmt: str) -> None:
    replies = ["The athlete is an Early Expert.", "A person skis down a steep slope."]
    msgs = conv("<video>\nWhat is the proficiency level?", replies[0], "Describe this video.", replies[1], fmt=fmt)
    out = tokenize_conversation(msgs, any_tok, name, {"<video>": 4}, BIG, sample_id="s1")
    assert len(out["input_ids"]) == len(out["labels"])
    runs = supervised_runs(out)
    expected = expected_replies(name, replies)
    assert len(runs) == len(expected)
    for run, want in zip(runs, expected):
        got = any_tok.decode(run, skip_special_tokens=False)
        assert got.strip() == want.strip()
    # no visual token is supervised
    assert all(lab == IGNORE_INDEX for tid, lab in zip(out["input_ids"], out["labels"]) if tid < 0)


def test_byte_level_supervised_text_is_exact(chatml: PreTrainedTokenizerFast) -> None:
    replies = ["Late Expert", "Because of balance."]
    for name in ALL_TEMPLATES:
        out = tokenize_conversation(conv("Q1", replies[0], "Q2", replies[1]), chatml, name, {}, BIG)
        runs = supervised_runs(out)
        want = expected_replies(name, replies)
        assert [chatml.decode(r, skip_special_tokens=False) for r in runs] == want, name
        # the supervised tokens are exactly the tokenization of reply + terminator
        assert runs == [chatml(w, add_special_tokens=False)["input_ids"] for w in want], name


def test_both_message_formats_agree(tok: PreTrainedTokenizerFast) -> None:
    a = tokenize_conversation(conv("<video> Q", "A", fmt="llava"), tok, "vicuna_v0", {"<video>": 2}, BIG)
    b = tokenize_conversation(conv("<video> Q", "A", fmt="openai"), tok, "vicuna_v0", {"<video>": 2}, BIG)
    assert a == b


def test_chat_template_end_marker_is_a_supervised_special_token(chatml: PreTrainedTokenizerFast) -> None:
    out = tokenize_conversation(conv("Q", "Novice"), chatml, "chat_template", {}, BIG)
    end_id = chatml.convert_tokens_to_ids("<|im_end|>")
    positions = [i for i, t in enumerate(out["input_ids"]) if t == end_id]
    assert len(positions) == 2  # user turn end (not supervised), assistant turn end (supervised)
    assert out["labels"][positions[0]] == IGNORE_INDEX and out["labels"][positions[1]] == end_id


# --------------------------------------------------------------------------- placeholders and BOS


@pytest.mark.parametrize("name", TEXT_TEMPLATES)
def test_placeholder_expansion_count_and_position(tok: PreTrainedTokenizerFast, name: str) -> None:
    msgs = conv("<video> first, then <image> and <video> again", "Late Expert")
    out = tokenize_conversation(msgs, tok, name, {"<video>": 3, "<image>": 2}, BIG)
    ids = out["input_ids"]
    assert ids.count(PLACEHOLDERS["<video>"]) == 6 and ids.count(PLACEHOLDERS["<image>"]) == 2
    text, _ = render(name, msgs, tok)
    before, rest = text.split("<video>", 1)
    prefix = [tok.bos_token_id] + tok(before, add_special_tokens=False)["input_ids"]
    assert ids[: len(prefix)] == prefix
    assert ids[len(prefix) : len(prefix) + 3] == [-200] * 3
    middle = rest.split("<image>", 1)[0]
    k = len(prefix) + 3 + len(tok(middle, add_special_tokens=False)["input_ids"])
    assert ids[k : k + 2] == [-201] * 2
    assert all(lab == IGNORE_INDEX for lab in out["labels"][: k + 2])


def test_placeholder_at_very_start_of_chat_template(chatml: PreTrainedTokenizerFast) -> None:
    out = tokenize_conversation(conv("<video>", "Novice"), chatml, "chat_template", {"<video>": 5}, BIG)
    ids = out["input_ids"]
    start = ids.index(-200)
    assert ids[start : start + 5] == [-200] * 5 and -200 not in ids[start + 5 :]
    assert chatml.decode(ids[:start]) == "<|im_start|>user\n"


def test_bos_handling(tok: PreTrainedTokenizerFast, chatml: PreTrainedTokenizerFast) -> None:
    for name in TEXT_TEMPLATES:
        assert get_template(name).add_bos
        out = tokenize_conversation(conv("Q", "A"), tok, name, {}, BIG)
        assert out["input_ids"][0] == tok.bos_token_id and out["labels"][0] == IGNORE_INDEX
        assert out["input_ids"].count(tok.bos_token_id) == 1
    no_bos = build_tokenizer(bos=False)
    out = tokenize_conversation(conv("Q", "A", system=""), no_bos, "vicuna_v1", {}, BIG)
    assert out["input_ids"] == no_bos("USER: Q ASSISTANT: A</s>", add_special_tokens=False)["input_ids"]
    assert not get_template("chat_template").add_bos
    out = tokenize_conversation(conv("Q", "A"), chatml, "chat_template", {}, BIG)
    assert out["input_ids"][0] == chatml.convert_tokens_to_ids("<|im_start|>")


def test_llama2_later_turns_start_with_bos(tok: PreTrainedTokenizerFast) -> None:
    out = tokenize_conversation(conv("Q1", "A1", "Q2", "A2"), tok, "llama2", {}, BIG)
    bos = [i for i, t in enumerate(out["input_ids"]) if t == tok.bos_token_id]
    assert len(bos) == 2 and all(out["labels"][i] == IGNORE_INDEX for i in bos)


def test_count_placeholders() -> None:
    msgs = conv("<video> and <video>", "ok", "<image>?", "no")
    assert count_placeholders(msgs) == {"<video>": 2, "<image>": 1, "<audio>": 0}


# --------------------------------------------------------------------------- errors


def test_unknown_template_lists_known_names() -> None:
    with pytest.raises(KeyError) as info:
        get_template("alpaca")
    for name in ALL_TEMPLATES:
        assert name in str(info.value)
    assert set(ALL_TEMPLATES) <= set(template_names())


def test_bad_role_named() -> None:
    with pytest.raises(ValueError, match="robot"):
        normalize_messages([{"from": "robot", "value": "hi"}])


@pytest.mark.parametrize(
    "msgs",
    [
        [{"from": "gpt", "value": "hi"}],
        [{"role": "system", "content": "s"}, {"role": "assistant", "content": "hi"}],
        [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}],
        [{"from": "human", "value": "a"}, {"from": "system", "value": "b"}],
        [{"from": "system", "value": "only"}],
        [],
        [{"from": "human", "value": 3}],
    ],
)
def test_invalid_conversations(msgs: list) -> None:
    with pytest.raises(ValueError):
        normalize_messages(msgs)


def test_first_turn_error_names_role() -> None:
    with pytest.raises(ValueError, match="first non-system turn.*'gpt'"):
        normalize_messages([{"from": "system", "value": "s"}, {"from": "gpt", "value": "x"}])


def test_over_max_length_names_sample_and_lengths(tok: PreTrainedTokenizerFast) -> None:
    msgs = conv("<video> Q", "A")
    n = len(tokenize_conversation(msgs, tok, "vicuna_v0", {"<video>": 8}, BIG)["input_ids"])
    assert len(tokenize_conversation(msgs, tok, "vicuna_v0", {"<video>": 8}, n)["input_ids"]) == n
    with pytest.raises(ValueError) as info:
        tokenize_conversation(msgs, tok, "vicuna_v0", {"<video>": 8}, n - 1, sample_id="clip_042")
    assert "clip_042" in str(info.value) and str(n) in str(info.value) and str(n - 1) in str(info.value)


def test_missing_visual_token_count_names_placeholder(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="<image>"):
        tokenize_conversation(conv("<video> <image>", "A"), tok, "vicuna_v1", {"<video>": 2}, BIG, sample_id="x")


def test_placeholder_in_reply_rejected(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="sample s9.*<video>"):
        tokenize_conversation(conv("Q", "see <video>"), tok, "vicuna_v1", {"<video>": 2}, BIG, sample_id="s9")


def test_chat_template_requirements(tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="chat_template"):
        render("chat_template", conv("Q", "A"), tok)
    odd = tokenizer_for("bytelevel")
    odd.chat_template = "{{ messages|length }}|" + CHATML  # rendering more turns rewrites the prefix
    with pytest.raises(ValueError, match="incrementally"):
        render("chat_template", conv("Q", "A"), odd)


# --------------------------------------------------------------------------- generation helpers


def test_stop_strings_and_trim_reply(tok: PreTrainedTokenizerFast, chatml: PreTrainedTokenizerFast) -> None:
    assert get_template("vicuna_v0").stop_strings(tok) == ["###"]
    assert get_template("vicuna_v1").stop_strings(tok) == ["</s>", "USER:"]
    assert get_template("llama2").stop_strings(tok) == ["</s>", "[INST]"]
    assert get_template("chat_template").stop_strings(chatml) == ["<|im_end|>", "</s>"]
    assert trim_reply("vicuna_v0", " Late Expert\n### Human: more", tok) == "Late Expert"
    assert trim_reply("chat_template", "Novice<|im_end|>\n<|im_start|>", chatml) == "Novice"
    assert trim_reply("vicuna_v1", " Novice", tok) == "Novice"


def test_self_questioning_template_also_supervises_the_questions(tok: PreTrainedTokenizerFast) -> None:
    msgs = conv("<video>\nWhat is the level?", "Novice", "What should improve?", "Keep the rhythm.")
    plain = tokenize_conversation(msgs, tok, "vicuna_v1", {"<video>": 3}, BIG)
    sq = tokenize_conversation(msgs, tok, "vicuna_v1_sq", {"<video>": 3}, BIG)
    assert sq["input_ids"] == plain["input_ids"]  # same text; only the supervision differs
    runs = [tok.decode(r, skip_special_tokens=False).strip() for r in supervised_runs(sq)]
    # question (after the placeholder) + the assistant prefix that closes it, then the reply, and so on
    assert runs == ["What is the level? ASSISTANT: Novice</s>", "What should improve? ASSISTANT: Keep the rhythm.</s>"]
    assert all(lab == IGNORE_INDEX for tid, lab in zip(sq["input_ids"], sq["labels"]) if tid < 0)
    # question prompt: the conversation so far with an open user turn, no assistant prefix after it
    opened = tokenize_conversation(conv("<video>\n"), tok, "vicuna_v1_sq", {"<video>": 3}, BIG, question_prompt=True)
    # ends right after the placeholder (the "\n" is left for the model to write, as in training)
    assert opened["input_ids"][-3:] == [PLACEHOLDERS["<video>"]] * 3
    text = tok.decode([i for i in opened["input_ids"] if i >= 0], skip_special_tokens=False)
    assert text.rstrip().endswith("USER:") and "ASSISTANT" not in text
    later = conv("<video>\nLevel?", "Novice", "")
    text = tok.decode(tokenize_conversation(later, tok, "vicuna_v1_sq", {"<video>": 3}, BIG, question_prompt=True)
                      ["input_ids"][-4:], skip_special_tokens=False)
    assert text.endswith("</s>USER:")  # no trailing space: the model generates " What ..." itself
    with pytest.raises(ValueError, match="does not learn to ask questions"):
        tokenize_conversation(conv("<video>\n"), tok, "vicuna_v1", {"<video>": 3}, BIG, question_prompt=True)


# --------------------------------------------------------------------------- ancestors' templates (issue 17)

from types import SimpleNamespace  # noqa: E402

from skillgpt.data.templates import MINIGPT4_SYSTEM, llm_template  # noqa: E402

ANCESTORS = ["pandagpt", "minigpt4", "minigpt4_llama2", "minigpt_v2"]


def _pieces(name: str, msgs: list[dict[str, str]], tokenizer, gen: bool = False) -> list[tuple[str, bool]]:
    return get_template(name).pieces(normalize_messages(msgs), tokenizer, gen)


@pytest.mark.parametrize("name,expected", [
    # PandaGPT openllama.py: PROMPT_START, '</Img> ' + q + '\n### Assistant:', a + '\n###', 'Human: ' + q + ...
    ("pandagpt", [("### Human: <Img>", False), ("<image>", False), ("</Img> What is it?\n### Assistant:", False),
                  ("A cat.\n###", True), ("Human: Why?\n### Assistant:", False), ("It purrs.\n###", True)]),
    # MiniGPT-4 '###Human: {} ###Assistant: ' + answer + '###'; later questions '<s>' + the template (the BOS
    # its own piece: the legacy slow tokenizer starts a word after it)
    ("minigpt4", [("###Human: <Img>", False), ("<image>", False), ("</Img> What is it? ###Assistant: ", False),
                  ("A cat.###", True), ("<s>", False), ("###Human: Why? ###Assistant: ", False), ("It purrs.###", True)]),
    ("minigpt4_llama2", [("[INST] <Img>", False), ("<image>", False), ("</Img> What is it? [/INST] ", False),
                         ("A cat.</s>", True), ("<s>", False), ("[INST] Why? [/INST] ", False), ("It purrs.</s>", True)]),
    ("minigpt_v2", [("[INST] <Img>", False), ("<image>", False), ("</Img> What is it? [/INST]", False),
                    ("A cat.</s>", True), ("<s>", False), ("[INST] Why? [/INST]", False), ("It purrs.</s>", True)]),
])
def test_ancestor_training_pieces(tok: PreTrainedTokenizerFast, name: str, expected: list) -> None:
    msgs = conv("<image>\nWhat is it?", "A cat.", "Why?", "It purrs.")
    assert _pieces(name, msgs, tok) == expected


@pytest.mark.parametrize("name,expected", [
    # PandaGPT web_demo.py: history 'q\n### Assistant: a\n###' + ' Human: q2' inside '</Img> ' ... '\n### Assistant:'
    ("pandagpt", "### Human: <Img><image></Img> What is it?\n### Assistant: A cat.\n### Human: Why?\n### Assistant:"),
    # MiniGPT-4 conversation.py CONV_VISION_Vicuna0 / CONV_VISION_LLama2, demo_v2.py CONV_VISION
    ("minigpt4", MINIGPT4_SYSTEM + "###Human: <Img><image></Img> What is it?###Assistant: A cat.###Human: Why?"
                 "###Assistant: "),
    ("minigpt4_llama2", MINIGPT4_SYSTEM + "<s>[INST] <Img><image></Img> What is it? [/INST] A cat.<s>[INST] Why? [/INST] "),
    ("minigpt_v2", "<s>[INST] <Img><image></Img> What is it? [/INST]A cat.<s>[INST] Why? [/INST]"),
])
def test_ancestor_generation_prompt(tok: PreTrainedTokenizerFast, name: str, expected: str) -> None:
    text, spans = render(name, conv("<image>\nWhat is it?", "A cat.", "Why?"), tok, add_generation_prompt=True)
    assert text == expected and spans == []


@pytest.mark.parametrize("name", ANCESTORS)
def test_ancestor_pieces_are_tokenized_separately(name: str) -> None:
    """A SentencePiece-style tokenizer starts every piece with its word marker, as the originals' separate
    tokenizer calls do; the supervised tokens are exactly each answer piece's."""
    metaspace = tokenizer_for("metaspace")
    msgs = conv("<image>\nWhat is it?", "A cat.", "Why?", "It purrs.")
    out = tokenize_conversation(msgs, metaspace, name, {"<image>": 2}, BIG)
    expected: list[int] = [metaspace.bos_token_id]
    for text, _ in _pieces(name, msgs, metaspace):
        expected += [PLACEHOLDERS[text]] * 2 if text in PLACEHOLDERS else metaspace(text, add_special_tokens=False).input_ids
    assert out["input_ids"] == expected
    answers = [t for t, sup in _pieces(name, msgs, metaspace) if sup]
    assert supervised_runs(out) == [metaspace(a, add_special_tokens=False).input_ids for a in answers]


@pytest.mark.parametrize("name", ANCESTORS)
def test_ancestor_without_media_and_stops(tok: PreTrainedTokenizerFast, name: str) -> None:
    pieces = _pieces(name, conv("Hello?", "Hi."), tok)
    assert "<Img>" not in "".join(t for t, _ in pieces) and pieces[-1] == (pieces[-1][0], True)
    assert trim_reply(name, "Fine." + get_template(name).stop_strings(tok)[0] + " Human: more", tok) == "Fine."


@pytest.mark.parametrize("name", TEXT_TEMPLATES + ANCESTORS + ["chat_template"])
def test_system_prompt_setting_applies_to_every_template(chatml: PreTrainedTokenizerFast, name: str) -> None:
    msgs = conv("<image>\nWhat is it?", "A cat.")
    template = llm_template(SimpleNamespace(template=name, system_prompt="You judge skill."))
    text, _ = render(template, msgs, chatml)
    assert "You judge skill." in text
    gen, _ = render(template, msgs[:1], chatml, add_generation_prompt=True)
    assert "You judge skill." in gen
    assert llm_template(SimpleNamespace(template=name, system_prompt=None)) is get_template(name)
    # a conversation's own system turn wins over the setting
    own, _ = render(template, conv("<image>\nWhat is it?", "A cat.", system="Own."), chatml)
    assert "Own." in own and "You judge skill." not in own


@pytest.mark.parametrize("name,default", [("vicuna_v0", "A chat between"), ("minigpt4", "Give the following image")])
def test_empty_system_prompt_removes_the_default(tok: PreTrainedTokenizerFast, name: str, default: str) -> None:
    msgs = conv("<image>\nWhat is it?")
    assert default in render(name, msgs, tok, add_generation_prompt=True)[0]
    empty = llm_template(SimpleNamespace(template=name, system_prompt=""))
    assert default not in render(empty, msgs, tok, add_generation_prompt=True)[0]


def test_system_flag_reaches_the_config_verbatim() -> None:
    import argparse

    from skillgpt.checkpoint.flags import add_location_flags, location_overrides
    from skillgpt.config import parse_overrides

    parser = argparse.ArgumentParser()
    add_location_flags(parser)
    for text in ['Judge: "skill" only.\nBe brief.', ""]:
        overrides = location_overrides(parser.parse_args(["--system", text]))
        assert parse_overrides(overrides) == [("model.llm.system_prompt", text)]
    assert location_overrides(parser.parse_args([])) == []


@pytest.mark.parametrize("name", ["minigpt4", "minigpt4_llama2", "minigpt_v2"])
def test_text_after_a_written_bos_starts_a_word(name: str) -> None:
    """As the originals' legacy slow Llama tokenizer: '<s>[INST]' is <s> then '▁[' (training and generation)."""
    metaspace = tokenizer_for("metaspace")
    bos = metaspace.bos_token_id
    for gen, msgs in [(False, conv("<image>\nWhat is it?", "A cat.", "Why?", "It purrs.")),
                      (True, conv("<image>\nWhat is it?", "A cat.", "Why?"))]:
        ids = tokenize_conversation(msgs, metaspace, name, {"<image>": 1}, BIG, add_generation_prompt=gen)["input_ids"]
        after = [ids[i + 1] for i in range(1, len(ids) - 1) if ids[i] == bos]
        written = render(name, msgs, metaspace, add_generation_prompt=gen)[0].count("<s>")
        assert len(after) == written and all(metaspace.convert_ids_to_tokens(t).startswith("\u2581") for t in after)
