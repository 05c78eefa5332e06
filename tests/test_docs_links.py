"""Every relative Markdown link in README.md and docs/*.md points to an existing file (and heading)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~)")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and every page in docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def prose_lines(text: str, drop_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code removed when `drop_code`."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, re.sub(r"`[^`]*`", "", line) if drop_code else line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Anchors of a Markdown file's headings."""
    found = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8"), drop_code=False):
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            found.add(slug(match.group(1)))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """'file:line: target (why)' for every relative link of `path` that does not resolve."""
    problems = []
    text = path.read_text(encoding="utf-8")
    for number, line in prose_lines(text):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http:, https:, mailto: ...
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{number}: {target}"
            if not dest.exists():
                problems.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where} (no heading with anchor #{anchor})")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_checker_catches_a_broken_link(tmp_path: Path) -> None:
    """The checker itself fails on a missing file, a missing heading, and ignores code and URLs."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Some `code` heading\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#some-code-heading) [web](https://example.org/x)\n"
        "[gone](docs/missing.md) [bad anchor](docs/a.md#nope)\n"
        "```\n[in code](nowhere.md)\n```\n`[inline](nowhere.md)`\n")
    assert [p.split(": ", 1)[1] for p in broken_links(readme, tmp_path)] == [
        "docs/missing.md (no such file)", "docs/a.md#nope (no heading with anchor #nope)"]
