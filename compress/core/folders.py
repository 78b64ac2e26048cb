"""The run folder (its layout is in the README): paths, the summary digest and the metrics log;
the round folder: the files one trained model of the lottery holds.

A writer claims its folder (`claim`): a folder of the user's (existing, not empty, no recipe.yaml
nor summary.json) is refused unless asked for, and `RUN/.lock` is locked (flock) for as long as
the process runs, so a second writer gets a one-line UserError naming the holder's pid. Stale-temp
cleanup takes the lock too, and removes only the toolkit's own temp files and scratch folders in
the toolkit's own subfolders (and its own root files' temps), never a user's `*.tmp`.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from compress.core.atomic import is_own_temp, write_json
from compress.core.atomic import write_text
from compress.core.errors import UserError

LOCK_NAME = ".lock"
OWN_FOLDERS = ("rounds", "export", "eval", "bench", "plots", "data", "quantize")
ROOT_FILES = ("recipe.yaml", "summary.json", "ticket.pt", "metrics.jsonl", "report.md",
              "report.html", "profile.json")
SCRATCH_PREFIXES = (".tide_", ".plot_")  # tempfile.TemporaryDirectory folders (TIDE, plots)
# mkstemp's own names (`.NAME.XXXXXXXX.tmp`), as writers without the lth~ marker leave them
_MKSTEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_HELD: dict[str, IO[str]] = {}  # run folders this process holds the lock of (released at exit)
ROUND_PREFIX = "round_"  # rounds/round_<k>/


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
    def quantize(self) -> Path:
        """The quantization phase: QAT checkpoints, the INT8 ticket, its export and evaluation."""
        return self.root / "quantize"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    @property
    def metrics_log(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def rounds(self) -> Path:
        return self.root / "rounds"

    def round(self, index: int) -> "RoundFolder":
        return RoundFolder(self.rounds / f"{ROUND_PREFIX}{index}")

    def round_indices(self) -> list[int]:
        """The indices of the round folders present (finished or not), in order."""
        return sorted(int(p.name[len(ROUND_PREFIX):]) for p in self.rounds.glob(f"{ROUND_PREFIX}*"))

    def eval_dir(self, engine: str) -> Path:
        return self.root / "eval" / engine

    def claim(self, *, allow_foreign: bool = False) -> None:
        """Check the folder may be written (`check_claimable`), create it and lock it."""
        self.check_claimable(allow_foreign=allow_foreign)
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock()

    def check_claimable(self, *, allow_foreign: bool = False) -> None:
        """UserError for a path under a file, a file, or (unless `allow_foreign`) a non-empty
        folder that is not a run folder."""
        existing = next(p for p in (self.root, *self.root.parents) if p.exists())
        if existing != self.root and not existing.is_dir():
            raise UserError(f"cannot create the run folder: {existing} is a file; expected --out "
                            "to name a new or empty folder", file=str(self.root))
        if existing != self.root:
            return
        if not self.root.is_dir():
            raise UserError("is a file; expected --out to name a new or empty folder",
                            file=str(self.root))
        if allow_foreign or self.recipe.is_file() or self.summary_path.is_file():
            return
        entries = sorted(p.name for p in self.root.iterdir() if p.name != LOCK_NAME)
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(f"folder is not empty ({len(entries)} entries: {shown}) and holds no "
                            "run (no recipe.yaml, no summary.json); choose a new or empty --out, "
                            "or ask to write into it anyway", file=str(self.root))

    def lock(self) -> None:
        """Hold an exclusive flock on RUN/.lock until this process ends (idempotent); another
        process holding it is a UserError naming its pid."""
        key = str(self.root.resolve())
        if key in _HELD:
            return
        handle = open(self.root / LOCK_NAME, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise UserError(f"another process (pid {holder}) is writing this run folder; wait for "
                            "it to end (or stop it) before resuming", file=str(self.root)) from err
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD[key] = handle

    def unlock(self) -> None:
        handle = _HELD.pop(str(self.root.resolve()), None)
        if handle is not None:
            handle.close()

    def remove_stale_temps(self) -> list[Path]:
        """Delete what a killed writer of the toolkit left: its atomic-write temp files and its
        scratch folders (.tide_*, .plot_*), in its own subfolders and beside its own root files.
        Takes the folder's lock first (a UserError while another process writes here)."""
        self.lock()
        stale = [p for p in self.root.iterdir() if _own_root_temp(p.name)]
        for folder in OWN_FOLDERS:
            if (self.root / folder).is_dir():
                stale += [p for p in (self.root / folder).rglob(".*") if _own_temp(p)]
        for path in sorted(stale, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return stale

    def finished_rounds(self) -> list[int]:
        return [k for k in self.round_indices() if self.round(k).metrics.is_file()]

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


def replicate_key(seed: int) -> str:
    """A seed replicate's name: its folder under `replicates/` and its key in summary.json's
    `rounds[k].replicates`."""
    return f"seed_{seed}"


@dataclass(frozen=True)
class RoundFolder:
    """The files of one trained model of the lottery: a round (`rounds/round_<k>/`), a control
    (`rounds/round_<k>/controls/<name>/`) or a seed replicate (`rounds/round_<k>/replicates/
    seed_<s>/`); the quantization phase's folder trains through the same round loop (`last`)."""

    root: Path

    @property
    def checkpoint(self) -> Path:
        """The trained weights."""
        return self.root / "checkpoint.pt"

    @property
    def mask(self) -> Path:
        return self.root / "mask.pt"

    @property
    def metrics(self) -> Path:
        """Written last: the folder's training is finished."""
        return self.root / "metrics.json"

    @property
    def sparsity(self) -> Path:
        """Per-layer and network sparsity (rounds only)."""
        return self.root / "sparsity.json"

    @property
    def rewind(self) -> Path:
        """The weights at the rewind point (round 0 of a run with pruning rounds)."""
        return self.root / "rewind.pt"

    @property
    def last(self) -> Path:
        """The epoch checkpoint a killed training resumes from (gone once finished)."""
        return self.root / "last.pt"

    @property
    def last_corrupt(self) -> Path:
        """A `last.pt` that failed to load, kept aside while the training restarts."""
        return self.root / "last.pt.corrupt"

    @property
    def sparse_logs(self) -> Path:
        """SparseML's logs while training (removed once finished)."""
        return self.root / "sparse_logs"

    def rank_sparse_logs(self, rank: int) -> Path:
        """A rank's own SparseML logs under torchrun (rank 0 uses `sparse_logs`)."""
        return self.sparse_logs if rank == 0 else self.root / f"sparse_logs_rank{rank}"

    @property
    def eval(self) -> Path:
        """The torch evaluation of the trained model."""
        return self.root / "eval"

    @property
    def eval_metrics(self) -> Path:
        return self.eval / "metrics.json"

    @property
    def eval_results(self) -> Path:
        return self.eval / "results.json"

    def control(self, name: str) -> "RoundFolder":
        return RoundFolder(self.root / "controls" / name)

    def replicate(self, seed: int) -> "RoundFolder":
        return RoundFolder(self.root / "replicates" / replicate_key(seed))


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


def _own_root_temp(name: str) -> bool:
    legacy = _MKSTEMP.match(name)
    return is_own_temp(name) or bool(legacy and legacy["name"] in ROOT_FILES)


def _own_temp(path: Path) -> bool:
    if path.name.startswith(SCRATCH_PREFIXES):
        return path.is_dir() and not path.is_symlink()
    return path.is_file() and (is_own_temp(path.name) or bool(_MKSTEMP.match(path.name)))


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
