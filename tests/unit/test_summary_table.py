"""The end-of-run console summary: the controls beside the ticket and the seed spread, in numbers
taken from summary.json's records."""
from __future__ import annotations

import statistics

from compress.run.summary_table import format_summary


def _round(index: int, sparsity: float, bbox: float, **extra) -> dict:
    return {"round": index, "sparsity": sparsity, "prunable_sparsity": sparsity,
            "metrics": {"bbox_mAP": bbox, "val_loss": 0.5}, **extra}


def test_controls_and_seed_spread_are_printed():
    summary = {"name": "study", "arch": "fasterrcnn", "backbone": "resnet18", "method": "imp",
               "rounds": [_round(0, 0.0, 0.44, replicates={"seed_1": {"bbox_mAP": 0.40},
                                                            "seed_2": {"bbox_mAP": 0.47}}),
                          _round(1, 0.2, 0.43, controls={"reinit": {"bbox_mAP": 0.31},
                                                         "random_mask": {"bbox_mAP": 0.12}})]}
    text = format_summary(summary)
    assert "round 1 controls (bbox_mAP): ticket 0.4300, reinit 0.3100, random_mask 0.1200" in text
    values = [0.44, 0.40, 0.47]
    assert (f"round 0 over 3 seeds (bbox_mAP): {statistics.fmean(values):.4f} +- "
            f"{statistics.stdev(values):.4f}") in text
    assert "0.4400, 0.4000, 0.4700" in text


def test_no_controls_no_extra_lines():
    text = format_summary({"rounds": [_round(0, 0.0, 0.3)]})
    assert "controls" not in text and "seeds" not in text
