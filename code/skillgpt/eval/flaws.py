"""Structured feedback metric: does the generated coaching name the clip's real flaws?

A sample that carries structured flaws (``"flaws": [{"beat": 2, "type": "stumble"}, ...]``, written by
``skillgpt make-sample-data``) is scored on its generated feedback: the flaws the answer names are
counted per type ("two stalls, one rushed swing" -> hesitation 2, rush 1) and compared with the
sample's own flaws, so references are never parsed. Per group of records:

- ``flaw_exact``: the fraction whose named flaw mix (count per type) equals the true one exactly
  (a clean clip is right only when no flaw is named);
- ``lost_beats_mae``: mean absolute error of the number of flaws named (lost beats) vs the true number;
- ``per_type``: precision and recall per flaw type, counting each named flaw against the true ones of its
  type (``min(named, true)`` hits per sample); ``None`` when nothing was named / nothing was there.

Phrases come from the synthetic set's wording per scenario (``skillgpt.data.synthetic.TEXT``); a
scenario it does not know uses the type names themselves ("2 rushes").
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping, Optional, Sequence

from skillgpt.data.synthetic import FLAW_TYPES, NUMBERS, TEXT

Counts = dict[str, int]
_WORD_NUMBERS = {w: i for i, w in enumerate(NUMBERS)} | {"a": 1, "an": 1, "no": 0}
_NUMBER = r"(\d+|" + "|".join(sorted(_WORD_NUMBERS, key=len, reverse=True)) + r")"


def flaw_phrases(scenario: str, types: Sequence[str] = FLAW_TYPES) -> dict[str, list[str]]:
    """{flaw type: the phrases (singular, plural) that name it} for `scenario`."""
    names = TEXT.get(scenario, {}).get("names", {})
    return {t: list(names[t]) if t in names else [t, f"{t}s", f"{t}es"] for t in types}


def parse_flaws(text: str, phrases: Mapping[str, Sequence[str]]) -> Counts:
    """Count per flaw type of "<number> <phrase>" mentions in `text` (longest phrase first, each span
    counted once; number words up to ten, digits, "a"/"an"). Types not mentioned count 0."""
    counts = {t: 0 for t in phrases}
    masked = text
    by_length = sorted(((p, t) for t, ps in phrases.items() for p in ps), key=lambda pt: -len(pt[0]))
    for phrase, kind in by_length:
        pattern = re.compile(rf"(?<!\w){_NUMBER}\s+{re.escape(phrase)}(?!\w)", re.IGNORECASE)
        for m in reversed(list(pattern.finditer(masked))):
            word = m.group(1).lower()
            counts[kind] += int(word) if word.isdigit() else _WORD_NUMBERS[word]
            masked = masked[: m.start()] + "\0" * (m.end() - m.start()) + masked[m.end():]
    return counts


def true_flaws(sample: Mapping[str, Any], types: Sequence[str] = FLAW_TYPES, where: str = "sample") -> Counts:
    """Count per type of a sample's structured ``flaws`` (a list of {"type": ...} or type strings)."""
    flaws = sample.get("flaws")
    if not isinstance(flaws, list):
        raise ValueError(f"{where}: 'flaws' must be a list of {{'type': ...}} dicts, got {type(flaws).__name__}")
    kinds = [f.get("type") if isinstance(f, Mapping) else f for f in flaws]
    unknown = sorted({str(k) for k in kinds} - set(types))
    if unknown:
        raise ValueError(f"{where}: flaw type(s) {unknown} are not among {list(types)}")
    counts = Counter(kinds)
    return {t: counts[t] for t in types}


def has_flaws(sample: Mapping[str, Any]) -> bool:
    """True when the sample carries structured flaws (an empty list counts: a clean clip)."""
    return isinstance(sample.get("flaws"), list)


def feedback_turns(sample: Mapping[str, Any]) -> Optional[tuple[str, str]]:
    """(follow-up question, reference feedback) of a conversation "Q, level, follow-up, feedback": the
    first human turn after the first assistant turn and the last assistant turn; None if absent."""
    turns = sample.get("conversations") or []
    replies = [i for i, t in enumerate(turns) if t.get("from") in ("gpt", "assistant")]
    if len(replies) < 2:
        return None
    follow = next((t for t in turns[replies[0] + 1:] if t.get("from") in ("human", "user")), None)
    return (follow["value"], turns[replies[-1]]["value"]) if follow else None


def flaw_types(samples: Sequence[Mapping[str, Any]]) -> list[str]:
    """The synthetic set's flaw types, then any other type the samples carry (sorted)."""
    seen = {str(f.get("type") if isinstance(f, Mapping) else f) for s in samples if has_flaws(s) for f in s["flaws"]}
    return list(FLAW_TYPES) + sorted(seen - set(FLAW_TYPES))


def flaw_record(generated: str, sample: Mapping[str, Any], types: Sequence[str] = FLAW_TYPES,
                where: str = "sample") -> dict[str, Any]:
    """Named vs true flaw counts of one generated feedback, with exact match and lost-beats error."""
    phrases = flaw_phrases(str(sample.get("scenario", "")), types)
    pred, gold = parse_flaws(generated, phrases), true_flaws(sample, list(phrases), where)
    return {"flaws_pred": pred, "flaws_gold": gold, "flaw_exact": pred == gold,
            "lost_beats_pred": sum(pred.values()), "lost_beats_gold": sum(gold.values())}


def _rate(hits: float, n: float) -> Optional[float]:
    return hits / n if n else None


def flaw_stats(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """flaw_n, flaw_exact, lost_beats_mae and per_type precision/recall over records with a flaw record."""
    scored = [r for r in records if r.get("flaws_gold") is not None]
    types = list(scored[0]["flaws_gold"]) if scored else []
    per_type = {}
    for t in types:
        hits = sum(min(r["flaws_pred"][t], r["flaws_gold"][t]) for r in scored)
        per_type[t] = {"precision": _rate(hits, sum(r["flaws_pred"][t] for r in scored)),
                       "recall": _rate(hits, sum(r["flaws_gold"][t] for r in scored)),
                       "true": sum(r["flaws_gold"][t] for r in scored)}
    return {"flaw_n": len(scored), "flaw_exact": _rate(sum(r["flaw_exact"] for r in scored), len(scored)),
            "lost_beats_mae": _rate(sum(abs(r["lost_beats_pred"] - r["lost_beats_gold"]) for r in scored),
                                    len(scored)),
            "per_type": per_type}


def majority_mix(train_samples: Sequence[Mapping[str, Any]], types: Sequence[str] = FLAW_TYPES) -> Optional[Counts]:
    """The most frequent flaw mix of the train split's samples with flaws (ties: first seen), or None."""
    mixes = [tuple(true_flaws(s, types, f"train sample {s.get('id', '?')}").items())
             for s in train_samples if has_flaws(s)]
    if not mixes:
        return None
    counts = Counter(mixes)
    best = max(counts.values())
    return dict(next(m for m in mixes if counts[m] == best))


def majority_mix_stats(records: Sequence[Mapping[str, Any]], mix: Optional[Counts]) -> dict[str, Optional[float]]:
    """Flaw-mix exact match and lost-beats error of always naming `mix` (the train split's majority)."""
    scored = [r for r in records if r.get("flaws_gold") is not None]
    if mix is None or not scored:
        return {"flaw_exact": None, "lost_beats_mae": None}
    lost = sum(mix.values())
    return {"flaw_exact": _rate(sum(r["flaws_gold"] == mix for r in scored), len(scored)),
            "lost_beats_mae": _rate(sum(abs(lost - r["lost_beats_gold"]) for r in scored), len(scored))}
