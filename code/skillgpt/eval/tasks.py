"""Benchmark protocols besides proficiency rating: multiple choice, action-quality scores, feedback text.

- ``multiple_choice`` (MVBench shape: ``candidates``, ``answer``): every option is ranked by its
  likelihood as the answer: the mean log-prob per token of the option (``eval.option_scoring: mean``,
  the default) or the sum (``sum``, which favours shorter options); accuracy, and the scoring used.
- ``score`` (FineDiving / MTL-AQA: ``score``): the generated answer's first number is the predicted
  score; Spearman's rho (scipy) and relative L2 (x100, range from the ground truth) as in the AQA papers,
  over the answers that hold a number; the others are counted (``unparsed``) and named by id.
- ``feedback``: the last assistant turn of each conversation is generated from the turns before it
  and compared with the reference by corpus BLEU-4 and chrF (sacrebleu); samples with structured
  ``flaws`` also get the flaw metric (``eval.flaws``: flaw-mix exact match, lost-beats error, per-type
  precision/recall). The turns before it are the reference's (the gold level is in the context).
"""
from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Optional, Sequence

from tqdm import tqdm

from skillgpt.data.prompt import eval_question
from skillgpt.eval.flaws import flaw_record, flaw_stats, flaw_types, has_flaws

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def option_strings(candidates: Sequence[str]) -> list[str]:
    """MVBench-style answer strings: "(A) first", "(B) second", ..."""
    return [f"({string.ascii_uppercase[i]}) {c}" for i, c in enumerate(candidates)]


def answer_index(sample: dict[str, Any], where: str) -> int:
    """Index of the correct candidate: `answer` is the candidate text, its letter, or "(B) text"."""
    cands, ans = [str(c) for c in sample["candidates"]], str(sample["answer"]).strip()
    opts = option_strings(cands)
    for i, (c, o) in enumerate(zip(cands, opts)):
        if ans in (c, o, o[:3], o[1]):
            return i
    raise ValueError(f"{where}: answer {ans!r} is none of the candidates {cands}")


def multiple_choice_record(scores: Sequence[float], sample: dict[str, Any], where: str) -> dict[str, Any]:
    gold = answer_index(sample, where)
    pred = max(range(len(scores)), key=lambda i: scores[i])
    return {"id": str(sample.get("id")), "gold": gold, "pred": pred, "correct": pred == gold,
            "scores": list(scores)}


def parse_score(text: str) -> Optional[float]:
    """First number in a generated answer ("Score: 78.4 (difficulty 3.0)" -> 78.4); None if absent."""
    found = NUMBER.search(text)
    return float(found.group()) if found else None


def score_metrics(gold: Sequence[float], pred: Sequence[Optional[float]],
                  ids: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Spearman's rho and relative L2 over samples with a parsed prediction; the answers with no number are
    counted (``unparsed``) and named (``unparsed_ids``), never dropped silently."""
    from scipy.stats import spearmanr

    ids = list(ids) if ids is not None else [str(i) for i in range(len(gold))]
    pairs = [(g, p) for g, p in zip(gold, pred) if p is not None]
    out: dict[str, Any] = {"n": len(gold), "parsed": len(pairs), "unparsed": len(gold) - len(pairs),
                           "spearman_rho": None, "relative_l2": None,
                           "unparsed_ids": [i for i, p in zip(ids, pred) if p is None]}
    if len(pairs) >= 2:
        g, p = zip(*pairs)
        rho = spearmanr(g, p).statistic
        out["spearman_rho"] = None if rho != rho else float(rho)  # constant input gives NaN
        span = (max(g) - min(g)) or 1.0
        out["relative_l2"] = 100.0 * sum(((a - b) / span) ** 2 for a, b in pairs) / len(pairs)
    return out


def text_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-4 and chrF of generated text against one reference each (sacrebleu)."""
    import sacrebleu

    return {"bleu4": sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score,
            "chrf": sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score}


def split_last_reply(turns: list[dict[str, str]], where: str) -> tuple[list[dict[str, str]], str]:
    """(turns before the last assistant turn, that turn's text) for feedback generation."""
    last = max((i for i, t in enumerate(turns) if t.get("from") in ("gpt", "assistant")), default=None)
    if last is None:
        raise ValueError(f"{where}: 'conversations' has no assistant turn to compare against")
    return turns[:last], turns[last]["value"]


def _multiple_choice(assistant: Any, s: dict[str, Any], media: Any, where: str) -> dict[str, Any]:
    """Rank the sample's options by likelihood (summed or per-token mean: ``eval.option_scoring``)."""
    if "candidates" not in s or "answer" not in s:
        raise ValueError(f"{where}: needs 'candidates' and 'answer' (eval.task=multiple_choice)")
    question = eval_question(s, str(s.get("question", "")))
    normalize = assistant.cfg.eval.option_scoring == "mean"
    scores = assistant.label_scores([media], question, option_strings(s["candidates"]), normalize=normalize)
    return multiple_choice_record(scores[0].tolist(), s, where)


def _score(assistant: Any, s: dict[str, Any], media: Any, where: str) -> dict[str, Any]:
    """The generated answer's first number against the sample's ``score`` (None: no number in it)."""
    if "score" not in s:
        raise ValueError(f"{where}: needs a numeric 'score' (eval.task=score)")
    cfg = assistant.cfg
    answer = assistant.ask(eval_question(s, cfg.eval.question), media, max_new_tokens=cfg.eval.max_new_tokens)
    pred = parse_score(answer)
    return {"id": str(s.get("id")), "gold": float(s["score"]), "pred": pred, "parsed": pred is not None,
            "generated": answer}


def _feedback(assistant: Any, s: dict[str, Any], media: Any, where: str, generate: bool) -> dict[str, Any]:
    """The last assistant turn generated from the turns before it, beside the reference."""
    context, reference = split_last_reply(s.get("conversations") or [], where)
    if context and context[0].get("from") in ("human", "user"):
        context = [{**context[0], "value": assistant.with_placeholders(context[0]["value"], media)}, *context[1:]]
    answer = assistant.reply(context, media, max_new_tokens=assistant.cfg.eval.max_new_tokens) if generate else ""
    record = {"id": str(s.get("id")), "scenario": str(s.get("scenario", "all")), "reference": reference,
              "generated": answer}
    if has_flaws(s) and generate:
        record.update(flaw_record(answer, s, flaw_types([s]), where))
    return record


def task_summary(task: str, records: list[dict[str, Any]], option_scoring: str) -> dict[str, Any]:
    """The metrics of `task` over its records, with the protocol used (multiple choice: option scoring)."""
    if task == "multiple_choice":
        n = len(records)
        return {"task": task, "n": n, "accuracy": sum(r["correct"] for r in records) / n if n else None,
                "option_scoring": option_scoring}
    if task == "score":
        return {"task": task, **score_metrics([r["gold"] for r in records], [r["pred"] for r in records],
                                              [r["id"] for r in records])}
    out = {"task": task, "n": len(records),
           **text_metrics([r["generated"] for r in records], [r["reference"] for r in records])}
    if any(r.get("flaws_gold") is not None for r in records):
        out.update(flaw_stats(records))  # flaw_n, flaw_exact, lost_beats_mae, per_type (eval.flaws)
    return out


def run_task(assistant: Any, samples: list[dict[str, Any]], root: Path, path: str,
             generate: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate `samples` with `assistant` under `eval.task`; returns (summary, per-sample records)."""
    cfg = assistant.cfg
    task = cfg.eval.task
    records: list[dict[str, Any]] = []
    for i, s in enumerate(tqdm(samples, desc=f"eval {task}")):
        where = f"{path}: sample {s.get('id', i)}"
        media = assistant.load(s, root)
        if task == "multiple_choice":
            records.append(_multiple_choice(assistant, s, media, where))
        elif task == "score":
            records.append(_score(assistant, s, media, where))
        else:
            records.append(_feedback(assistant, s, media, where, generate))
    return task_summary(task, records, cfg.eval.option_scoring), records
