"""Every relative link in README.md and docs/*.md resolves: the file exists and a `#heading` anchor
names a heading of that file, slugged as GitHub slugs them (lower case, punctuation dropped, spaces
to hyphens, a repeated heading gets -1, -2, ...). Links inside code blocks and inline code are not links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def markdown_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code blanked out."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor in a markdown file, duplicates numbered as GitHub numbers them."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    links = []
    for line in prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked here
                links.append(target)
    return links


def broken(page: Path, target: str) -> str | None:
    """Why a link does not resolve, or None when it does."""
    file_part, _, anchor = target.partition("#")
    destination = (page.parent / file_part).resolve() if file_part else page
    if not destination.exists():
        return f"{file_part}: no such file"
    if anchor:
        if destination.suffix != ".md":
            return f"#{anchor}: an anchor into a file that is not markdown"
        if anchor not in anchors(destination):
            return f"#{anchor}: no such heading in {destination.name}"
    return None


def test_github_slug_rules():
    assert github_slug("Per-frame latency and `--latency-ms`") == "per-frame-latency-and---latency-ms"
    assert github_slug("What CI verifies on ARM64") == "what-ci-verifies-on-arm64"
    assert github_slug("Exact units and memory") == "exact-units-and-memory"
    assert github_slug("The one trap: `/proc/cpuinfo`") == "the-one-trap-proccpuinfo"


def test_the_checker_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A heading\n\n[ok](#a-heading) [gone](missing.md) [bad](#no-such)\n"
                    "```\n[in code](nowhere.md)\n```\n`[inline](nowhere.md)`\n")
    links = relative_links(page)
    assert links == ["#a-heading", "missing.md", "#no-such"]
    assert [broken(page, link) is None for link in links] == [True, False, False]


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    failures = [f"{target}: {why}" for target in relative_links(page) if (why := broken(page, target))]
    assert not failures, f"{page.relative_to(REPO)}: broken links: {failures}"
