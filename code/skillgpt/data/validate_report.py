"""What `skillgpt data validate` reports: per split (`SplitReport`: samples, media files, problems, label and
scenario counts, token lengths, whether the cache answered) and in all (`ValidationReport`: the table, the
listed problems, one DataError for every error)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from skillgpt.data.checks import Problem


@dataclass
class SplitReport:
    split: str
    file: str
    samples: int = 0
    media_files: int = 0
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    scenarios: dict[str, int] = field(default_factory=dict)
    max_tokens: int = 0
    over_length: int = 0
    decoded: bool = True
    cached: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SplitReport":
        d = dict(d)
        d["errors"] = [Problem(**p) for p in d.get("errors", [])]
        d["warnings"] = [Problem(**p) for p in d.get("warnings", [])]
        return cls(**d)


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(r: list[str]) -> str:  # text columns left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths), *map(line, rows[1:])])


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


@dataclass
class ValidationReport:
    splits: list[SplitReport] = field(default_factory=list)
    not_set: list[str] = field(default_factory=list)  # requested splits the config leaves empty

    @property
    def errors(self) -> list[Problem]:
        return [p for s in self.splits for p in s.errors]

    @property
    def warnings(self) -> list[Problem]:
        return [p for s in self.splits for p in s.warnings]

    @property
    def ok(self) -> bool:
        return not self.errors

    def table(self) -> str:
        rows = [["split", "file", "samples", "media files", "errors", "warnings", "max tokens", "too long",
                 "cached"]]
        for s in self.splits:
            rows.append([s.split, s.file, str(s.samples), str(s.media_files), str(len(s.errors)),
                         str(len(s.warnings)), str(s.max_tokens) if s.max_tokens else "-", str(s.over_length),
                         "yes" if s.cached else "no"])
        out = [_grid(rows)]
        for s in self.splits:
            out.append(f"{s.split}: labels: {_counts(s.labels)}; scenarios: {_counts(s.scenarios)}")
        if self.not_set:
            out.append(f"not set in the config (skipped): {', '.join(self.not_set)}")
        return "\n".join(out)

    def format(self, limit: int = 50) -> str:
        """The table, then warnings and errors (at most `limit` of each)."""
        out = [self.table()]
        for title, items in (("warning", self.warnings), ("error", self.errors)):
            if items:
                out.append(f"{len(items)} {title}(s):")
                out += [f"  {p}" for p in items[:limit]]
                if len(items) > limit:
                    out.append(f"  ... and {len(items) - limit} more")
        return "\n".join(out)

    def raise_for_errors(self, limit: int = 50) -> None:
        """DataError listing every error (at most `limit`) with file, sample id and field."""
        errors = self.errors
        if errors:
            from skillgpt.data.media import DataError

            shown = "\n  ".join(str(p) for p in errors[:limit])
            more = f"\n  ... and {len(errors) - limit} more" if len(errors) > limit else ""
            raise DataError(f"data validation found {len(errors)} error(s):\n  {shown}{more}")

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "splits": [s.to_dict() for s in self.splits], "not_set": self.not_set}
