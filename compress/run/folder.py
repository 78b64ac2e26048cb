"""The run folder (its layout is in the README): paths, the summary digest and the metrics log."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.core.atomic import write_json
from compress.core.atomic import write_text


@dataclass(frozen=True)
class RunFolder:
    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def ticket(self) -> Path:
        return self.root / "ticket.pt"

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def metrics_log(self) -> Path:
        return self.root / "metrics.jsonl"

    def round_dir(self, index: int) -> Path:
        return self.root / "rounds" / f"round_{index}"

    def eval_dir(self, engine: str) -> Path:
        return self.root / "eval" / engine

    def remove_stale_temps(self) -> list[Path]:
        """Delete what a killed process left half-written: atomic-write temp files (.NAME.XXXX.tmp)
        and scratch folders (.tide_*, .plot_*). Call only while no other process writes here."""
        import shutil

        stale = [p for p in self.root.rglob(".*")
                 if p.name.endswith(".tmp") or p.name.startswith((".tide_", ".plot_"))]
        for path in sorted(stale, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return stale

    def finished_rounds(self) -> list[int]:
        rounds = self.root / "rounds"
        done = [int(p.name.split("_")[1]) for p in rounds.glob("round_*") if (p / "metrics.json").is_file()]
        return sorted(done)

    # summary.json -------------------------------------------------------------------------
    def read_summary(self) -> dict[str, Any]:
        if self.summary_path.is_file():
            return json.loads(self.summary_path.read_text())
        return {}

    def update_summary(self, **parts: Any) -> dict[str, Any]:
        summary = self.read_summary()
        summary.update(parts)
        write_json(self.summary_path, summary)
        return summary


class MetricsLog:
    """Append-only JSON lines; `truncate(offset)` drops records written after a checkpoint so a
    resumed run does not log the same steps twice."""

    def __init__(self, path: Path, **fixed: Any):
        self.path = path
        self.fixed = fixed

    def __call__(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({**self.fixed, **record}, default=float)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def with_fields(self, **fixed: Any) -> "MetricsLog":
        return MetricsLog(self.path, **{**self.fixed, **fixed})

    def offset(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, offset: int) -> None:
        if self.path.exists() and self.path.stat().st_size > offset:
            with open(self.path, "r+b") as handle:
                handle.truncate(offset)

    def drop_own_records(self) -> None:
        """Remove the records carrying this log's fixed fields (e.g. one round's) from the file."""
        if not self.path.exists() or not self.fixed:
            return

        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and not _matches(json.loads(line), self.fixed)]
        write_text(self.path, "".join(line + "\n" for line in keep))


def _matches(record: dict[str, Any], fixed: dict[str, Any]) -> bool:
    return all(record.get(k) == v for k, v in fixed.items())


class NullMetrics(MetricsLog):
    """The metrics log of a rank that does not write (only rank 0 writes under torchrun)."""

    def __init__(self, **fixed: Any):
        super().__init__(Path("/dev/null"), **fixed)

    def __call__(self, record: dict[str, Any]) -> None:
        return None

    def with_fields(self, **fixed: Any) -> "NullMetrics":
        return self

    def offset(self) -> int:
        return 0

    def truncate(self, offset: int) -> None:
        return None

    def drop_own_records(self) -> None:
        return None
