"""The docs hold together: every relative link in README.md and docs/ names a file that
exists, and the README stays a front door."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

from helpers import REPO

LINK = re.compile(r"\]\(([^)\s]+)\)")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def relative_targets(page: Path) -> List[str]:
    targets = [match.group(1) for match in LINK.finditer(page.read_text())]
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    missing = [t for t in relative_targets(page)
               if not (page.parent / t.split("#", 1)[0]).exists()]
    assert missing == []


def test_the_readme_is_a_front_door() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 220
