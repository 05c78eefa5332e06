"""Benchmark protocols besides proficiency rating: multiple choice, action-quality scores, feedback text.

- ``multiple_choice`` (MVBench shape: ``candidates``, ``answer``): every option is ranked by its
  likelihood as the answer, as options are scored in MVBench; accuracy.
- ``score`` (FineDiving / MTL-AQA: ``score``): the generated answer's first number is the predicted
  score; Spearman's rho (scipy) and relative L2 (x100, range from the ground truth) as in the AQA papers.
- ``feedback``: the last assistant turn of each conversation is generated from the turns before it
  and compared with the reference by corpus BLEU-4 and chrF (sacrebleu).
"""
from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any, Optional, Sequence

from tqdm import tqdm

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


def score_metrics(gold: Sequence[float], pred: Sequence[Optional[float]]) -> dict[str, Any]:
    """Spearman's rho and relative L2 over samples with a parsed prediction (unparsed ones counted)."""
    from scipy.stats import spearmanr

    pairs = [(g, p) for g, p in zip(gold, pred) if p is not None]
    out: dict[str, Any] = {"n": len(gold), "parsed": len(pairs), "spearman_rho": None, "relative_l2": None}
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


def _first_question(sample: dict[str, Any], fallback: str) -> str:
    turns = sample.get("conversations") or []
    human = [t["value"] for t in turns if t.get("from") in ("human", "user")]
    return human[0] if human else fallback


def run_task(assistant: Any, samples: list[dict[str, Any]], root: Path, path: str,
             generate: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate `samples` with `assistant` under `eval.task`; returns (summary, per-sample records)."""
    cfg = assistant.cfg
    task, gen = cfg.eval.task, {"max_new_tokens": cfg.eval.max_new_tokens}
    records: list[dict[str, Any]] = []
    for i, s in enumerate(tqdm(samples, desc=f"eval {task}")):
        where = f"{path}: sample {s.get('id', i)}"
        media = assistant.load(s, root)
        if task == "multiple_choice":
            if "candidates" not in s or "answer" not in s:
                raise ValueError(f"{where}: needs 'candidates' and 'answer' (eval.task=multiple_choice)")
            question = _first_question(s, str(s.get("question", "")))
            scores = assistant.label_scores([media], question, option_strings(s["candidates"]))[0].tolist()
            records.append(multiple_choice_record(scores, s, where))
        elif task == "score":
            if "score" not in s:
                raise ValueError(f"{where}: needs a numeric 'score' (eval.task=score)")
            answer = assistant.ask(_first_question(s, cfg.eval.question), media, **gen)
            records.append({"id": str(s.get("id")), "gold": float(s["score"]), "pred": parse_score(answer),
                            "generated": answer})
        else:  # feedback
            context, reference = split_last_reply(s.get("conversations") or [], where)
            if context and context[0].get("from") in ("human", "user"):
                context = [{**context[0], "value": assistant.with_placeholders(context[0]["value"], media)}, *context[1:]]
            answer = assistant.reply(context, media, **gen) if generate else ""
            records.append({"id": str(s.get("id")), "reference": reference, "generated": answer})
    if task == "multiple_choice":
        n = len(records)
        summary = {"task": task, "n": n, "accuracy": sum(r["correct"] for r in records) / n if n else None}
    elif task == "score":
        summary = {"task": task, **score_metrics([r["gold"] for r in records], [r["pred"] for r in records])}
    else:
        summary = {"task": task, "n": len(records),
                   **text_metrics([r["generated"] for r in records], [r["reference"] for r in records])}
    return summary, records
