"""The stage protocol: every step after the lottery is one `Stage` over a run folder.

A stage has a name (its key in summary.json), says whether the recipe enables it and whether the
run folder already holds its result, and runs to a record. `compress.stages.sequence` walks the
ordered list; `--resume` skipping lives there, in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from compress.recipe.schema import Recipe
from compress.core.folders import RunFolder
from compress.run.loaded import LoadedModel, load_model


@dataclass
class StageContext:
    """What a stage may use: the resolved recipe, the run folder, the run's data and loaders (when
    the pipeline has them) and the ticket, loaded once on first use."""

    recipe: Recipe
    run: RunFolder
    data: Any = None
    loaders: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    _loaded: Optional[LoadedModel] = None

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = load_model(self.run.root)
        return self._loaded


class Stage(Protocol):
    name: str  # the summary.json key the record lands under

    def enabled(self, recipe: Recipe) -> bool:
        """Whether the recipe asks for this stage."""

    def done(self, run: RunFolder) -> bool:
        """Whether the run folder already holds this stage's result."""

    def run(self, ctx: StageContext) -> Any:
        """Do the work; the record returned is stored in summary.json (None: nothing stored)."""
