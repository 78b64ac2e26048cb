"""The report page: sections of text, tables and figures rendered as Markdown and as one
self-contained HTML file (PNG figures embedded as base64 data URIs; no scripts, no external assets).
"""
from __future__ import annotations

import base64
import html
import os
from dataclasses import dataclass, field
from pathlib import Path

from compress.core.atomic import write_text

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
p.missing { color: #8a5a00; background: #fff6e0; border-left: 4px solid #e0a000; padding: .3em .6em; }
nav ul { columns: 2; }
"""


class Missing(Exception):
    """A section's input is absent; the message completes "not run: ..."."""


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    title: str = ""


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Section:
    """One part of the report; `missing` holds "not run: ..." lines for inputs that are absent."""

    key: str
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def fmt(value: object, digits: int = 4) -> str:
    """A table cell: '-' for None, fixed decimals for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_MD_SPECIALS = "\\`*_[]<>|"


def _md_cell(text: str) -> str:
    """`text` as literal Markdown on one line: every special (\\ ` * _ [ ] < > |) escaped, so a
    run label or category name can neither format, link, open HTML nor split a table cell."""
    text = str(text).replace("\r", " ").replace("\n", " ")
    return "".join("\\" + c if c in _MD_SPECIALS else c for c in text)


def markdown_table(table: Table) -> str:
    lines = [f"**{table.title}**", ""] if table.title else []
    lines.append("| " + " | ".join(_md_cell(h) for h in table.header) + " |")
    lines.append("|" + "|".join("---" for _ in table.header) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(title: str, intro: list[str], sections: list[Section], base: Path) -> str:
    """Markdown; figures are linked relative to `base` (the folder report.md is written to)."""
    out = [f"# {_md_cell(title)}", ""] + [_md_cell(p) + "\n" for p in intro]
    out += ["## Contents", ""] + [f"- [{s.title}](#{s.key})" for s in sections] + [""]
    for s in sections:
        out += [f'<a id="{s.key}"></a>', f"## {s.title}", ""]
        out += [p + "\n" for p in s.text]
        out += [markdown_table(t) + "\n" for t in s.tables]
        for fig in s.figures:
            rel = Path(os.path.relpath(fig.path, base)).as_posix()
            out += [f"![{_md_cell(fig.caption)}]({rel})", "", f"*{_md_cell(fig.caption)}*", ""]
        out += [f"> {_md_cell(m)}\n" for m in s.missing]
    return "\n".join(out).rstrip() + "\n"


def data_uri(png_path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(png_path).read_bytes()).decode("ascii")


def html_table(table: Table) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    title = f"<p><strong>{esc(table.title)}</strong></p>" if table.title else ""
    return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_section(s: Section) -> str:
    esc = html.escape
    parts = [f'<section id="{esc(s.key)}"><h2>{esc(s.title)}</h2>']
    parts += [f"<p>{esc(p)}</p>" for p in s.text]
    parts += [html_table(t) for t in s.tables]
    parts += [f'<figure><img src="{data_uri(f.path)}" alt="{esc(f.caption)}">'
              f"<figcaption>{esc(f.caption)}</figcaption></figure>" for f in s.figures]
    parts += [f'<p class="missing">{esc(m)}</p>' for m in s.missing]
    parts.append("</section>")
    return "\n".join(parts)


def render_html(title: str, intro: list[str], sections: list[Section]) -> str:
    """One HTML document with every figure inlined; it loads nothing from anywhere else."""
    esc = html.escape
    nav = "".join(f'<li><a href="#{esc(s.key)}">{esc(s.title)}</a></li>' for s in sections)
    body = "\n".join(_html_section(s) for s in sections)
    paras = "".join(f"<p>{esc(p)}</p>" for p in intro)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{paras}"
            f"<nav><h2>Contents</h2><ul>{nav}</ul></nav>\n{body}\n</body></html>\n")


def write_report(out_dir: Path, title: str, intro: list[str], sections: list[Section]) -> tuple[Path, Path]:
    """report.md and report.html in `out_dir` (atomic writes); returns both paths."""
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text(md_path, render_markdown(title, intro, sections, out_dir))
    write_text(html_path, render_html(title, intro, sections))
    return md_path, html_path
