"""The names of the failed checks a warning line may carry (`extra={"check": NAME}`).

Kept in `compress.core` so every package (the lottery included) tags its warning lines through
`tag` without importing `compress.run`; compress/run/checks.py re-exports both and documents what
each check means.
"""
from __future__ import annotations

from typing import Any

CHECKS = {
    "parity": "DeepSparse detections differ from ONNX Runtime's",
    "engine_failed": "an engine crashed or could not run",
    "under_load": "timed while other work ran",
    "loaded_profile": "runtime-aware zeros from a profile timed under load",
    "shortfall": "gradual pruning short of its target sparsity",
    "partial_transfer": "ticket transfer matched only part of the source",
    "deployment_slower": "the DeepSparse deployment is slower than ONNX Runtime's full graph",
    "int8_accuracy": "the INT8 ticket loses more mAP than the budget against the fp32 ticket",
    "int8_engines": "DeepSparse INT8 and ONNX Runtime INT8 disagree on mAP",
    "int8_zeros": "a pruned weight is not zero in the INT8 ticket or its export",
}


def tag(check: str) -> dict[str, Any]:
    """`extra=` for the one warning line of a failed check."""
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; known: {', '.join(CHECKS)}")
    return {"check": check}
