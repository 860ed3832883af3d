"""The README is a front page that stands on its own: its links and those of docs/ resolve inside
the repository (files and #anchors), it points nowhere outside it, and it stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 300

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def prose(text: str) -> str:
    """The text without code: a `[x](y)` inside code is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens, -1, -2, ...
    for repeats."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def is_external(target: str) -> bool:
    return re.match(r"[a-z][a-z0-9+.-]*:", target) is not None  # https:, mailto:, ...


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if is_external(target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.is_relative_to(REPO):
            broken.append(f"{target} (outside the repository)")
        elif not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{page.relative_to(REPO)}: broken links: {broken}"


def test_readme_links_nothing_outside_the_repository() -> None:
    up = [t for t in links(README) if not is_external(t) and (".." in Path(t).parts)]
    assert not up, f"README.md links outside the repository, which a user does not have: {up}"


def test_readme_is_a_front_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < MAX_README_LINES, (
        f"README.md has {len(lines)} lines; move details to docs/ (under {MAX_README_LINES})"
    )


def test_readme_has_no_development_log() -> None:
    """Issue numbers and commit hashes belong to the project's history, not its front page
    (measured results carry their commit in docs/benchmarks.md)."""
    text = prose(README.read_text(encoding="utf-8"))
    issues = re.findall(r"\bissues? #?\d+", text, re.I)
    hashes = [
        w
        for w in re.findall(r"\b[0-9a-f]{7,40}\b", text)
        if re.search(r"\d", w) and re.search(r"[a-f]", w)
    ]
    assert not issues and not hashes, f"README.md: issue numbers {issues}, commit hashes {hashes}"


def test_ci_runs_the_readmes_test_command() -> None:
    """CI runs what the README tells a user to run, nothing else."""
    readme = README.read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in readme
    commands = [
        line.strip() for line in ci.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert "make test" in commands, f".ci/run does not call `make test`: {commands}"
