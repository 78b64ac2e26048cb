"""Saving the analysis figures with every text drawn as written.

Labels carry user strings (category names, run labels); a `$` in one must not start matplotlib's
mathtext (`a$b$c` renders `b` as math, an odd `$...$` raises). Texts made before saving are
switched off one by one, texts made while drawing (tick labels) under `text.parse_math: False`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def save_plain(fig: Any, out_png: str | os.PathLike, dpi: int = 100) -> Path:
    """`fig.tight_layout()` and `fig.savefig(out_png)` with mathtext off; returns the path."""
    import matplotlib
    from matplotlib.text import Text

    for text in fig.findobj(Text):
        text.set_parse_math(False)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context({"text.parse_math": False}):
        fig.tight_layout()
        fig.savefig(out, dpi=dpi)
    return out
