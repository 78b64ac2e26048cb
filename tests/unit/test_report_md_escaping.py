"""report.md shows run labels and category names literally: Markdown specials escaped in table
cells, intro lines, figure captions and the "not run" lines (no raw HTML, no split table cell)."""
from __future__ import annotations

import re
from pathlib import Path

from compress.report.page import Figure, Section, Table, render_markdown

LABEL = "<script>alert(1)</script> a|b *c* _d_ [e](f) `g` \\h"
ESCAPED = r"\<script\>alert(1)\</script\> a\|b \*c\* \_d\_ \[e\](f) \`g\` \\h"


def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_labels_and_category_names_are_literal_everywhere(tmp_path: Path):
    section = Section("ap", "AP")
    section.tables.append(Table(["category", "AP"], [[LABEL, "0.5"]], title=""))
    section.figures.append(Figure(tmp_path / "plots" / "ap.png", f"AP of {LABEL}"))
    section.missing.append(f"not run ({LABEL}): no eval/<engine>/metrics.json")
    md = render_markdown("report", [f"{LABEL}: run"], [section], tmp_path)
    assert "<script>" not in md and "</script>" not in md
    lines = md.splitlines()
    assert f"{ESCAPED}: run" in lines
    (row,) = [line for line in lines if "0.5" in line]
    assert row == f"| {ESCAPED} | 0.5 |" and _unescaped_pipes(row) == 3
    assert f"![AP of {ESCAPED}](plots/ap.png)" in lines and f"*AP of {ESCAPED}*" in lines
    assert f"> not run ({ESCAPED}): no eval/\\<engine\\>/metrics.json" in lines
