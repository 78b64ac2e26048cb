"""Convergence (Appendix C): validation loss per epoch for dense and every round, on one plot."""
from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from compress.core.errors import DataError
from compress.evaluate.analysis.figures import save_plain


def load_metrics_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """One dict per non-blank line of a metrics.jsonl; a bad line is a DataError naming it."""
    records = []
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError as err:
        raise DataError("file not found", file=str(path)) from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"line {number} col {err.colno}: invalid JSON: {err.msg}", file=str(path)) from err
        if not isinstance(record, dict):
            raise DataError(f"line {number}: expected a JSON object, got {type(record).__name__}",
                            file=str(path))
        records.append(record)
    return records


def round_label(round_index: int) -> str:
    """Round 0 is the dense training; round k > 0 the k-th pruned retraining."""
    return "dense" if round_index == 0 else f"round {round_index}"


def val_loss_series(records: Sequence[Mapping[str, Any]], loss_key: str = "val_loss",
                    round_key: str = "round", epoch_key: str = "epoch") -> dict[str, list[tuple[float, float]]]:
    """{label: [(epoch, val_loss), ...]} from records that carry a validation loss.

    Records without `loss_key` (train steps) are skipped; records without a round count as round 0.
    The last value logged for an epoch wins (a resumed run may log an epoch twice).
    """
    by_round: dict[int, dict[float, float]] = defaultdict(dict)
    for rec in records:
        if rec.get(loss_key) is None or rec.get(epoch_key) is None:
            continue
        by_round[int(rec.get(round_key, 0) or 0)][float(rec[epoch_key])] = float(rec[loss_key])
    return {round_label(r): sorted(by_round[r].items()) for r in sorted(by_round)}


def plot_convergence(series: Mapping[str, Sequence[tuple[float, float]]], out_png: str | os.PathLike,
                     title: str = "Validation loss per epoch") -> Path:
    """One line per run (dense and each round): validation loss against epoch."""
    from matplotlib.figure import Figure

    if not series:
        raise DataError("no validation loss found to plot (no record with val_loss and epoch)")
    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    for label, points in series.items():
        epochs, losses = zip(*points) if points else ((), ())
        ax.plot(epochs, losses, marker="o", markersize=3,
                linewidth=2.2 if label == "dense" else 1.2, label=label,
                color="black" if label == "dense" else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_plain(fig, out_png)


def convergence_verdict(dense: Sequence[tuple[float, float]], sparse: Sequence[tuple[float, float]],
                        names: tuple[str, str] = ("dense", "ticket")) -> str | None:
    """One line comparing two validation-loss curves (the supplement's Appendix C claim: a sparse
    subnetwork converges faster) over the epochs both logged; None when they share none."""
    theirs = dict(dense)
    shared = [(epoch, loss, theirs[epoch]) for epoch, loss in sparse if epoch in theirs]
    if not shared:
        return None
    lower = sum(1 for _, mine, other in shared if mine < other)
    first_epoch, first_mine, first_other = shared[0]
    held = "holds" if lower > len(shared) / 2 else "does not hold"
    return (f"{names[1]} below {names[0]} at {lower} of {len(shared)} shared epochs (first, epoch "
            f"{first_epoch:g}: {first_mine:.4f} vs {first_other:.4f}; last: {shared[-1][1]:.4f} vs "
            f"{shared[-1][2]:.4f}): the claim that it converges faster {held} here")
