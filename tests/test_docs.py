"""The documentation's links hold: every relative link in README.md and docs/*.md names a file
that exists and, with `#anchor`, a heading of that file (GitHub's anchor rules). Also: the README
stays short, names the two commands, and links every docs page.

Pages are read as CommonMark by markdown-it-py (rich's own Markdown parser), so code blocks and
code spans hold no links.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250

SKIPPED_SCHEMES = ("http://", "https://", "mailto:")
HTML_ANCHOR = re.compile(r"<a\s[^>]*?(?:name|id)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
LINE_ANCHOR = re.compile(r"L\d+(?:-L\d+)?")
MARKDOWN = MarkdownIt("commonmark")


def read(text: str) -> tuple[list[tuple[int, str]], list[str], list[str]]:
    """A page as CommonMark reads it: (line, target) of every link and image, the text of
    every heading, and every piece of HTML."""
    targets, headings, html = [], [], []
    tokens = MARKDOWN.parse(text)
    for previous, token in zip([None, *tokens], tokens):
        if token.type == "html_block":
            html.append(token.content)
        if token.type != "inline":
            continue
        if previous is not None and previous.type == "heading_open":  # its rendered text
            parts = (c.content for c in token.children if c.type in ("text", "code_inline"))
            headings.append("".join(parts))
        line = token.map[0] + 1
        for child in token.children:
            line += child.type in ("softbreak", "hardbreak")
            if child.type in ("link_open", "image"):
                targets.append((line, str(child.attrGet("href") or child.attrGet("src"))))
            elif child.type == "html_inline":
                html.append(child.content)
    return targets, headings, html


def anchors(text: str) -> set[str]:
    """Every anchor GitHub gives a Markdown file: its headings' text lowercased, all but letters,
    digits, spaces, hyphens and underscores dropped, spaces made hyphens, a repeated one
    numbered -1, -2, ...; plus explicit <a name=...>/<a id=...> anchors."""
    _, headings, html = read(text)
    found: set[str] = set()
    for heading in headings:
        base = slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = 0
        while slug in found:
            n += 1
            slug = f"{base}-{n}"
        found.add(slug)
    found.update(anchor for piece in html for anchor in HTML_ANCHOR.findall(piece))
    return found


def broken_links(page: Path) -> list[str]:
    """One message (file:line: target: why) for every relative link of `page` that does not
    resolve."""
    problems = []
    where = page.relative_to(ROOT) if page.is_relative_to(ROOT) else page
    for number, target in read(page.read_text(encoding="utf-8"))[0]:
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


def test_readme_is_short_names_the_two_commands_and_links_every_docs_page():
    text = README.read_text(encoding="utf-8")
    lines = len(text.splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, more than {README_MAX_LINES}: move detail into docs/"
    )
    for command in ("make train", "make test"):
        assert command in text, f"README.md no longer names `{command}`"
    pages = sorted(DOCS.glob("*.md"))
    assert pages, f"no docs pages in {DOCS}"
    linked = {
        (README.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in read(text)[0]
        if target.partition("#")[0] and not target.lower().startswith(SKIPPED_SCHEMES)
    }
    unlinked = [str(p.relative_to(ROOT)) for p in pages if p.resolve() not in linked]
    assert not unlinked, f"docs pages README.md does not link: {', '.join(unlinked)}"
