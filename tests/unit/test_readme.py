"""The README is a front door: at most 100 lines, and every link into docs/ (and every link
between the docs pages, anchors included) lands on a file and a heading that exist."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_README_LINES = 100
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = [line.lstrip("#").strip() for line in page.read_text().splitlines()
             if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def _broken(page: Path) -> list[str]:
    out = []
    for target in LINK.findall(page.read_text()):
        path, _, anchor = target.partition("#")
        if "://" in target or not path.endswith(".md"):
            continue
        dest = (page.parent / path).resolve()
        if not dest.is_file():
            out.append(f"{page.name}: {target} (no such file)")
        elif anchor and anchor not in _anchors(dest):
            out.append(f"{page.name}: {target} (no such heading)")
    return out


def test_readme_is_at_most_100_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines"


def test_readme_links_every_docs_page_and_every_link_resolves():
    readme = (ROOT / "README.md").read_text()
    linked = {Path(t.partition("#")[0]).name for t in LINK.findall(readme)
              if t.startswith("docs/")}
    pages = sorted((ROOT / "docs").glob("*.md"))
    assert pages and {p.name for p in pages} <= linked, "docs pages the README does not link"
    broken = [b for page in [ROOT / "README.md", *pages] for b in _broken(page)]
    assert not broken, "\n".join(broken)


def test_link_checker_catches_a_missing_page_and_heading(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n[x](b.md) [y](a.md#a-page) [z](a.md#nope)\n")
    assert _broken(tmp_path / "a.md") == ["a.md: b.md (no such file)",
                                          "a.md: a.md#nope (no such heading)"]
