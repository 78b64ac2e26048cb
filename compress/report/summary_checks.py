"""The types `compress report` relies on in summary.json (and rounds/*/metrics.json), checked
before any plot is drawn: a wrong type is one DataError naming the file, the key path, the bad
value and what is allowed, instead of a traceback from inside a section after the plots before it
were already rewritten. Keys the report does not read are not checked."""
from __future__ import annotations

import math
from typing import Any

from compress.core.errors import DataError

STRINGS = ("name", "arch", "backbone", "method", "task", "recipe_hash")
MAPPINGS = ("ticket", "export", "macs", "eval")
FRACTIONS = ("sparsity", "prunable_sparsity")
BENCH_NUMBERS = ("p50_ms", "p90_ms", "p99_ms", "items_per_s")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bad(path: str, key: str, value: Any, allowed: str) -> DataError:
    return DataError(f"{str(value)[:60]!r} ({type(value).__name__}) is not allowed; allowed: "
                     f"{allowed}", file=path, key=key)


def check_round(record: Any, path: str, key: str) -> None:
    """One round record: `round` an integer >= 0, sparsities fractions, metrics numbers."""
    if not isinstance(record, dict):
        raise _bad(path, key, record, "an object {round, sparsity, metrics, ...}")
    index = record.get("round")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise _bad(path, f"{key}.round", index, "an integer >= 0")
    for name in FRACTIONS:
        value = record.get(name)
        if value is not None and not (_number(value) and 0.0 <= value <= 1.0):
            raise _bad(path, f"{key}.{name}", value, "a fraction in [0, 1]")
    _check_metrics(record.get("metrics"), path, f"{key}.metrics")
    controls = record.get("controls")
    if controls is not None:
        if not isinstance(controls, dict):
            raise _bad(path, f"{key}.controls", controls, "an object {control: metrics}")
        for name, metrics in controls.items():
            _check_metrics(metrics, path, f"{key}.controls.{name}")


LABELS = ("engine", "graph", "status", "reason", "runner", "model")


def _check_metrics(metrics: Any, path: str, key: str) -> None:
    if metrics is None:
        return
    if not isinstance(metrics, dict):
        raise _bad(path, key, metrics, "an object {metric: number}")
    for name, value in metrics.items():
        if name in LABELS and isinstance(value, str):
            continue  # an engine row names its engine, graph and status
        if value is not None and not isinstance(value, (dict, list)) and not _number(value):
            raise _bad(path, f"{key}.{name}", value, "a finite number or null")


def check_summary(summary: Any, path: str) -> None:
    """summary.json as the report reads it."""
    if not isinstance(summary, dict):
        raise _bad(path, "(top level)", summary, "an object")
    for name in STRINGS:
        if summary.get(name) is not None and not isinstance(summary[name], str):
            raise _bad(path, name, summary[name], "a string")
    for name in MAPPINGS:
        if summary.get(name) is not None and not isinstance(summary[name], dict):
            raise _bad(path, name, summary[name], "an object")
    rounds = summary.get("rounds")
    if rounds is not None and not isinstance(rounds, list):
        raise _bad(path, "rounds", rounds, "a list of round records")
    for index, record in enumerate(rounds or []):
        check_round(record, path, f"rounds[{index}]")
    sparsity = (summary.get("ticket") or {}).get("sparsity")
    if sparsity is not None and not (_number(sparsity) and 0.0 <= sparsity <= 1.0):
        raise _bad(path, "ticket.sparsity", sparsity, "a fraction in [0, 1]")
    _check_bench(summary.get("bench"), path)
    _check_warnings(summary.get("warnings"), path)
    for engine, metrics in (summary.get("eval") or {}).items():
        if _number(metrics):
            continue  # a difference between engines (e.g. onnxruntime_minus_torch_bbox_mAP)
        _check_metrics(metrics, path, f"eval.{engine}")


def _check_bench(bench: Any, path: str) -> None:
    if bench is None:
        return
    if not isinstance(bench, list):
        raise _bad(path, "bench", bench, "a list of {engine, graph, batch, status, p50_ms, ...}")
    for index, row in enumerate(bench):
        if not isinstance(row, dict):
            raise _bad(path, f"bench[{index}]", row, "an object {engine, batch, p50_ms, ...}")
        for name in BENCH_NUMBERS:
            if row.get(name) is not None and not _number(row[name]):
                raise _bad(path, f"bench[{index}].{name}", row[name], "a finite number or null")


def _check_warnings(warnings: Any, path: str) -> None:
    """`warnings` as compress.run.checks writes them: {check, message, stage} per failed check."""
    if warnings is None:
        return
    shape = "an object {check: string, message: string, stage: string or null}"
    if not isinstance(warnings, list):
        raise _bad(path, "warnings", warnings, f"a list of {shape}")
    for index, entry in enumerate(warnings):
        if not isinstance(entry, dict):
            raise _bad(path, f"warnings[{index}]", entry, shape)
        for name in ("check", "message"):
            if not isinstance(entry.get(name), str):
                raise _bad(path, f"warnings[{index}].{name}", entry.get(name), "a string")
        if entry.get("stage") is not None and not isinstance(entry["stage"], str):
            raise _bad(path, f"warnings[{index}].stage", entry["stage"], "a string or null")
