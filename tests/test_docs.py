"""The documentation's links hold: every relative link in README.md and docs/*.md names a file
that exists and, with `#anchor`, a heading of that file (GitHub's anchor rules). Also: the README
stays short, names the two commands, and links every docs page.

Reads only Markdown files, found from this file's own path; needs nothing installed.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

SKIPPED_SCHEMES = ("http://", "https://", "mailto:")
# [text](target) or ![alt](target), optional "title"; the text may hold one level of [...]
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)"
)
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
SETEXT_UNDERLINE = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HTML_ANCHOR = re.compile(r"<a\s[^>]*?(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
LINE_ANCHOR = re.compile(r"L\d+(?:-L\d+)?")


def outside_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line not inside a fenced code block (``` or ~~~)."""
    lines, fence = [], None
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                continue
            lines.append((number, line))
        elif match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
            if not line.strip().strip(fence[0]):  # a closing fence holds nothing else
                fence = None
    return lines


def strip_code_spans(line: str) -> str:
    """Inline code shows its text literally: `[a](b)` inside backticks is no link."""
    return re.sub(r"(`+)(.+?)\1", "`code`", line)


def heading_texts(text: str) -> list[str]:
    """The text of every ATX and setext heading outside fenced code, in order."""
    texts, previous = [], None
    for _, line in outside_fences(text):
        atx = ATX_HEADING.match(line)
        underline = SETEXT_UNDERLINE.match(line)
        if atx:
            texts.append(atx.group(2) or "")
            previous = None
            continue
        if underline and previous is not None and previous.strip():
            if not re.match(r"^ {0,3}([|>*+-]|\d+[.)] |<)", previous):
                texts.append(previous.strip())
                previous = None
                continue
        previous = line
    return texts


def slugify(heading: str) -> str:
    """GitHub's anchor for a heading's text, before duplicates are numbered: the rendered text
    (links become their text, markup goes), lowercased, everything but letters, digits,
    spaces, hyphens and underscores dropped, spaces turned into hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor GitHub gives a Markdown file: its headings' slugs, a repeated slug numbered
    -1, -2, ..., plus explicit <a name=...>/<a id=...> anchors."""
    found: set[str] = set()
    for heading in heading_texts(text):
        base = slug = slugify(heading)
        n = 0
        while slug in found:
            n += 1
            slug = f"{base}-{n}"
        found.add(slug)
    for _, line in outside_fences(text):
        found.update(HTML_ANCHOR.findall(line))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition outside
    fenced code and inline code."""
    found = []
    for number, line in outside_fences(text):
        line = strip_code_spans(line)
        for target in INLINE_LINK.findall(line):
            found.append((number, target))
        definition = REFERENCE_DEF.match(line)
        if definition:
            found.append((number, definition.group(1)))
    return [(n, t[1:-1] if t.startswith("<") and t.endswith(">") else t) for n, t in found]


def broken_links(page: Path) -> list[str]:
    """One message (file:line: target: why) for every relative link of `page` that does not
    resolve."""
    problems = []
    where = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
    for number, target in links(page.read_text(encoding="utf-8")):
        if target.lower().startswith(SKIPPED_SCHEMES):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page
        prefix = f"{where}:{number}: link '{target}'"
        if not resolved.exists():
            shown = resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved
            problems.append(f"{prefix}: no such file or folder {shown}")
            continue
        if not anchor:
            continue
        if resolved.is_file() and resolved.suffix.lower() == ".md":
            known = anchors(resolved.read_text(encoding="utf-8"))
            if unquote(anchor) not in known:
                problems.append(
                    f"{prefix}: no heading with anchor '#{anchor}' in {resolved.name} "
                    f"(its anchors: {', '.join(sorted(known))})"
                )
        elif not (resolved.is_file() and LINE_ANCHOR.fullmatch(anchor)):
            problems.append(f"{prefix}: '#{anchor}' cannot be checked: the target is no Markdown")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    problems = broken_links(page)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_short_and_names_the_two_commands():
    text = README.read_text(encoding="utf-8")
    lines = len(text.splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, more than {README_MAX_LINES}: move detail into docs/"
    )
    for command in ("make train", "make test"):
        assert command in text, f"README.md no longer names `{command}`"


def test_every_docs_page_is_linked_from_the_readme():
    pages = sorted(DOCS.glob("*.md"))
    assert pages, f"no docs pages in {DOCS}"
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in links(README.read_text(encoding="utf-8"))
        if target.partition("#")[0] and not target.lower().startswith(SKIPPED_SCHEMES)
    }
    unlinked = [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in linked]
    assert not unlinked, f"docs pages README.md does not link: {', '.join(unlinked)}"
