"""A human-readable duration for progress lines (round times, ETAs)."""
from __future__ import annotations


def format_duration(seconds: float) -> str:
    """`7 s`, `3 min 05 s`, `2 h 10 min` (rounded to the second; hours drop the seconds)."""
    minutes, secs = divmod(int(round(max(0.0, seconds))), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
