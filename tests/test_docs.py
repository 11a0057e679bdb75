"""The README and the docs/ pages (and the other guides that link into them): every relative link reaches a file
(and its heading, for a #fragment into a markdown file), and the README stays short enough to read first."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
GUIDES = [REPO / "deploy" / "systemd" / "INSTALL.md", REPO / "models" / "README.md", REPO / "bench" / "README.md"]
README_MAX_BYTES = 11_000

LINK = re.compile(r"\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces turned into hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in a markdown file, a repeated heading numbered -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    links = [a or b for a, b in LINK.findall(text)]
    return [link for link in links if not re.match(r"[a-z]+:", link)]


def test_the_slug_is_githubs() -> None:
    assert slug("8. The web dashboard (optional)") == "8-the-web-dashboard-optional"
    assert slug("A farm: one intake, one Redis, N GPU workers") == "a-farm-one-intake-one-redis-n-gpu-workers"
    assert slug("Memory: `wav2lip` on the CPU") == "memory-wav2lip-on-the-cpu"
    assert slug("Links, special files and limits") == "links-special-files-and-limits"


@pytest.mark.parametrize("page", PAGES + GUIDES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_its_heading(page: Path) -> None:
    links = relative_links(page)
    assert links, f"{page.name} links nowhere"
    broken = []
    for link in links:
        target, _, fragment = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f"{link}: no such file")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{link}: no heading #{fragment} in {path.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(REPO / link.partition("#")[0]).resolve() for link in relative_links(REPO / "README.md")}
    assert set(PAGES[1:]) <= linked, sorted(p.name for p in set(PAGES[1:]) - linked)


def test_the_readme_stays_short() -> None:
    size = len((REPO / "README.md").read_bytes())
    assert size < README_MAX_BYTES, f"README.md is {size} bytes: move details into docs/"
