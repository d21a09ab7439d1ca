"""Every Python example of README.md and docs/*.md runs as written.

The ```python blocks of one page run in order in one namespace (a page's examples build on each
other), in an empty working folder, against the embedded sample (an empty default store). A block
that cannot run offline is fenced as ```python no-run, with the reason on the same line
(``no-run: reaches the exchange``); there must be a reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line, tag, code) of every python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m[1].strip(), m[2]) for m in FENCE.finditer(text)]


def test_every_skipped_block_says_why():
    for page in PAGES:
        for line, tag, _ in blocks(page):
            if tag:
                assert re.fullmatch(r"no-run: \S.*", tag), f"{page.name}:{line}: tag {tag!r}; use 'no-run: <why>'"


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: p.name)
def test_the_page_s_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BACKTEST_DATA_DIR", str(tmp_path / "store"))  # empty: the embedded sample is read
    ns: dict = {"__name__": f"docs_{page.stem}"}
    ran = 0
    for line, tag, code in blocks(page):
        if tag.startswith("no-run"):
            continue
        exec(compile(code, f"{page.name}:{line}", "exec"), ns)
        ran += 1
    assert ran, f"{page.name}: every example is no-run"
