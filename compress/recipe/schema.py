"""The recipe: one typed model of the whole YAML file (model, data, schedule, lottery, modifiers,
export, evaluation, benchmark, smoke profile).

Every key has a default and a range; `compress/recipe/load.py` loads, merges and validates.
"""
from __future__ import annotations

import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from compress.lottery.controls import CONTROL_NAMES
from compress.lottery.distributions import DISTRIBUTION_NAMES, DISTRIBUTIONS
from compress.lottery.masks import MASK_TYPES
from compress.lottery.methods import METHOD_NAMES, METHODS
from compress.models.heads import HeadConfig
from compress.lottery.sparseml_adapter import TRAINING_MODIFIERS, modifier_names
from compress.core.errors import RecipeError
from compress.evaluate.engines import BENCH_ENGINES, DEFAULT_EVALUATE_ENGINES, EVALUATE_ENGINES

DURATION_PATTERN = r"^\d+(\.\d+)?(it|ep)$"
Duration = str
PREFIX_PATTERN = r"([A-Za-z0-9_]+\.)+"  # modifier_prefix: module names, each ending in '.'


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelCfg(_Section):
    arch: Literal["fasterrcnn", "maskrcnn", "keypointrcnn"]
    backbone: Literal["resnet18", "resnet50", "tiny"] = "resnet50"
    trainable_layers: int = Field(5, ge=0, le=5)
    norm: Literal["batch", "frozen", "group"] = "batch"
    weights: Optional[str] = None
    backbone_weights: Optional[str] = None
    min_size: int = Field(800, ge=32, le=4096)
    max_size: int = Field(1333, ge=32, le=8192)
    heads: HeadConfig = HeadConfig()

    @model_validator(mode="after")
    def _sizes(self) -> "ModelCfg":
        if self.max_size < self.min_size:
            raise ValueError(f"max_size {self.max_size} must be >= min_size {self.min_size}")
        levels = 3 if self.backbone == "tiny" else 5  # FPN outputs, pool level included
        sizes = self.heads.anchor_sizes
        if sizes is not None and len(sizes) != levels:
            raise ValueError(f"heads.anchor_sizes {sizes} needs {levels} sizes for backbone "
                             f"'{self.backbone}' (one per FPN level)")
        return self


class SyntheticCfg(_Section):
    train_images: int = Field(200, ge=1, le=100000)
    val_images: int = Field(60, ge=1, le=100000)
    image_size: int = Field(128, ge=32, le=2048)
    seed: int = Field(0, ge=0)
    difficulty: Literal["easy", "medium", "hard"] = "easy"  # compress.data.synth.DIFFICULTIES


class DataCfg(_Section):
    dataset: Literal["coco", "voc", "synthetic"] = "synthetic"
    root: Optional[str] = None
    train_split: str = "train2017"
    val_split: str = "val2017"
    num_workers: int = Field(2, ge=0, le=64)
    synthetic: SyntheticCfg = SyntheticCfg()

    @model_validator(mode="after")
    def _root(self) -> "DataCfg":
        if self.dataset != "synthetic" and not self.root:
            raise ValueError(f"root is required for dataset '{self.dataset}' (a folder path)")
        return self


class TrainCfg(_Section):
    epochs: Optional[float] = Field(12.0, gt=0, le=10000)
    iterations: Optional[int] = Field(None, ge=1, le=10_000_000)
    batch_size: int = Field(16, ge=1, le=4096)
    lr: float = Field(0.02, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0, lt=1)
    warmup_iters: int = Field(1000, ge=0)
    warmup_factor: float = Field(0.001, gt=0, le=1)
    lr_steps: list[Duration] = ["8ep", "11ep"]
    lr_gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: Optional[float] = Field(None, gt=0)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = False
    log_every: int = Field(20, ge=1)
    val_every_epochs: float = Field(1.0, gt=0)

    @field_validator("lr_steps")
    @classmethod
    def _steps(cls, steps: list[str]) -> list[str]:
        for step in steps:
            _check_duration(step)
        return steps

    @model_validator(mode="after")
    def _length(self) -> "TrainCfg":
        if (self.epochs is None) == (self.iterations is None):
            raise ValueError("set exactly one of epochs or iterations (the other to null)")
        return self


class RuntimeCfg(_Section):
    """`distribution: runtime`: the latency profile and the allocator's guards."""

    profile: Optional[str] = None  # a profile JSON file; None = the cached one (built if missing)
    mass_bound: float = Field(0.5, ge=0, le=100)
    max_layer_sparsity: float = Field(0.98, gt=0, lt=1)
    stem_max_sparsity: float = Field(0.8, ge=0, lt=1)


class LotteryCfg(_Section):
    method: Literal[METHOD_NAMES] = "imp"
    rounds: int = Field(5, ge=1, le=50)
    prune_fraction: Optional[float] = Field(0.2, gt=0, lt=1)
    target_sparsity: Optional[float] = Field(None, gt=0, lt=1)
    distribution: Literal[DISTRIBUTION_NAMES] = "global"
    mask_type: Literal[MASK_TYPES] = "unstructured"  # what the rounds prune: weights or 4-blocks
    runtime: RuntimeCfg = RuntimeCfg()
    scope: Literal["all", "backbone"] = "all"
    include: list[str] = []
    exclude: list[str] = []
    rewind: Duration = "1ep"
    source: Optional[str] = None
    early_bird: bool = True
    controls: list[Literal[CONTROL_NAMES]] = []
    control_rounds: list[int] = []  # pruning rounds (>= 1) that train the controls; [] = every one
    seeds: list[int] = []  # seed replicates for the spread (compress.lottery.controls)
    seed_rounds: list[int] = [0]  # the rounds (0 = dense) that train them

    @field_validator("rewind")
    @classmethod
    def _rewind(cls, value: str) -> str:
        return _check_duration(value)

    @model_validator(mode="after")
    def _consistent(self) -> "LotteryCfg":
        method = METHODS[self.method]
        for key, what in method.needs.items():
            if not getattr(self, key):
                raise ValueError(f"method '{self.method}' needs lottery.{key} ({what})")
        self._check_distribution(method)
        if self.prune_fraction is None and self.target_sparsity is None and method.uses_fraction:
            raise ValueError("set prune_fraction or target_sparsity")
        self._check_controls(method.pruning_rounds(self))
        self._check_seeds(method.pruning_rounds(self))
        return self

    def _check_distribution(self, method: Any) -> None:
        dist = DISTRIBUTIONS[self.distribution]
        if dist.methods is not None and self.method not in dist.methods:
            raise ValueError(f"distribution '{self.distribution}' works with methods "
                             f"{', '.join(dist.methods)}, not '{self.method}'")
        if self.mask_type not in method.mask_types:
            takers = [m.name for m in METHODS.values() if self.mask_type in m.mask_types]
            hint = (" (gradual: set mask_type on its SparseML pruning modifier)"
                    if method.needs_modifiers else "")
            raise ValueError(f"mask_type '{self.mask_type}' prunes the rounds of methods "
                             f"{', '.join(takers)}, not '{self.method}'{hint}")
        if self.mask_type not in dist.mask_types:
            takers = [d.name for d in DISTRIBUTIONS.values() if self.mask_type in d.mask_types]
            why = " (the latency profile and its allocator count single weights)" \
                if dist.needs_profile else ""
            raise ValueError(f"mask_type '{self.mask_type}' works with distributions "
                             f"{', '.join(takers)}, not '{self.distribution}'{why}")

    def _check_seeds(self, pruning_rounds: int) -> None:
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds {self.seeds} must be distinct integers >= 0")
        bad = [k for k in self.seed_rounds if not 0 <= k <= pruning_rounds]
        if bad or len(set(self.seed_rounds)) != len(self.seed_rounds):
            raise ValueError(f"seed_rounds {self.seed_rounds} must be distinct rounds in "
                             f"[0, {pruning_rounds}]")

    def _check_controls(self, pruning_rounds: int) -> None:
        if len(set(self.controls)) != len(self.controls):
            raise ValueError(f"controls {self.controls} name a control twice")
        if self.controls and pruning_rounds < 1:
            raise ValueError(f"controls need pruning rounds; method '{self.method}' has none "
                             "(use imp or oneshot)")
        bad = [k for k in self.control_rounds if not 1 <= k <= pruning_rounds]
        if bad or len(set(self.control_rounds)) != len(self.control_rounds):
            raise ValueError(f"control_rounds {self.control_rounds} must be distinct pruning "
                             f"rounds in [1, {pruning_rounds}]")
        if self.control_rounds and not self.controls:
            raise ValueError("control_rounds without controls: list the controls to train "
                             f"({', '.join(CONTROL_NAMES)})")


class ExportCfg(_Section):
    enabled: bool = True
    opset: int = Field(17, ge=11, le=17)
    image_size: Optional[int] = Field(None, ge=32, le=4096)
    compact: bool = True


class QuantizeCfg(_Section):
    """The quantization phase after the lottery (compress.stages.quantize): QAT with SparseML's
    !QuantizationModifier, the ticket's zeros held."""
    enabled: bool = False
    iterations: int = Field(100, ge=1, le=10_000_000)
    lr: Optional[float] = Field(None, gt=0, le=10)  # None: train.lr / 100 (SparseML's QAT recipes)
    observer_freeze: float = Field(0.75, gt=0, le=1)  # of the iterations: scales fixed after it


class EvaluateCfg(_Section):
    enabled: bool = True
    engines: list[Literal[EVALUATE_ENGINES]] = list(DEFAULT_EVALUATE_ENGINES)
    tide: bool = True
    keypoint_errors: bool = True
    max_images: Optional[int] = Field(None, ge=1)
    convention: Literal["coco", "detectron2"] = "coco"  # segm results: box area (coco) or mask area


class BenchCfg(_Section):
    enabled: bool = True
    engines: list[Literal[BENCH_ENGINES]] = list(BENCH_ENGINES)
    batch_sizes: list[int] = [1]
    warmup: int = Field(5, ge=0, le=1000)
    iterations: int = Field(20, ge=1, le=100000)

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, sizes: list[int]) -> list[int]:
        if not sizes or any(size < 1 or size > 1024 for size in sizes):
            raise ValueError(f"{sizes} must be a non-empty list of integers in [1, 1024]")
        return sizes


class Recipe(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    model: ModelCfg
    data: DataCfg = DataCfg()
    train: TrainCfg = TrainCfg()
    lottery: LotteryCfg = LotteryCfg()
    modifiers: Union[list[dict[str, Any]], str] = []  # inline, or a SparseML recipe file's path
    modifier_variables: dict[str, Union[int, float, str, bool]] = {}  # override the file's variables
    modifier_prefix: str = ""  # put before every parameter name / `re:` pattern of the modifiers
    export: ExportCfg = ExportCfg()
    quantize: QuantizeCfg = QuantizeCfg()
    evaluate: EvaluateCfg = EvaluateCfg()
    bench: BenchCfg = BenchCfg()
    smoke: dict[str, Any] = {}

    @property
    def image_size(self) -> int:
        """The size a run exports, profiles and benchmarks at: export.image_size, else the
        model's min_size."""
        return self.export.image_size or self.model.min_size

    @field_validator("modifiers")
    @classmethod
    def _tagged(cls, modifiers: Union[list[dict[str, Any]], str]) -> Union[list[dict[str, Any]], str]:
        if isinstance(modifiers, str):
            return modifiers
        for index, modifier in enumerate(modifiers):
            if "__tag__" not in modifier:
                raise ValueError(f"entry {index} is not a SparseML modifier: write it as "
                                 "`- !GMPruningModifier` followed by its arguments")
        return modifiers

    @field_validator("modifier_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if prefix and not re.fullmatch(PREFIX_PATTERN, prefix):
            raise ValueError(f"'{prefix}' is not a parameter-name prefix: write module names, each "
                             "ending in '.', e.g. 'backbone.body.'")
        return prefix

    @model_validator(mode="after")
    def _gradual_needs_modifiers(self) -> "Recipe":
        if METHODS[self.lottery.method].needs_modifiers and not self.modifiers:
            raise ValueError(f"lottery.method '{self.lottery.method}' needs a modifiers section "
                             "(a SparseML GMP recipe)")
        if self.modifier_variables and not isinstance(self.modifiers, str):
            raise ValueError("modifier_variables override a SparseML recipe file's variables: "
                             "set `modifiers:` to the file's path")
        if self.modifier_prefix and not self.modifiers:
            raise ValueError("modifier_prefix prefixes the modifiers' parameter names: it needs a "
                             "modifiers section")
        self._modifiers_fit_method()
        if self.quantize.enabled and self.model.norm == "group":
            raise ValueError("quantize needs BatchNorm (folded into the convs before QAT); "
                             "model.norm 'group' cannot be folded: use 'batch' or 'frozen'")
        if self.train.seed in self.lottery.seeds:
            raise ValueError(f"lottery.seeds {self.lottery.seeds} repeats train.seed "
                             f"{self.train.seed}: list the other seeds")
        return self

    def _modifiers_fit_method(self) -> None:
        """Training modifiers run under every method; the others (pruning, ...) need gradual."""
        if isinstance(self.modifiers, str):
            try:
                names = modifier_names(self.modifiers, self.modifier_variables)
            except RecipeError as err:
                raise ValueError(str(err).split(": ", 1)[-1]) from None
        else:
            names = [m["__tag__"] for m in self.modifiers]
        method = METHODS[self.lottery.method]
        other = [n for n in names if n not in TRAINING_MODIFIERS]
        if other and not method.needs_modifiers:
            raise ValueError(f"lottery.method '{self.lottery.method}' cannot use !{other[0]}: its "
                             "training runs only " + ", ".join(f"!{n}" for n in TRAINING_MODIFIERS)
                             + "; SparseML pruning modifiers need lottery.method 'gradual'")


def rewind_beyond_schedule(recipe: Recipe) -> Optional[str]:
    """Why `lottery.rewind` lies past the end of a round's training, when the recipe alone tells
    (rewind and training length in the same unit); None otherwise. A rewind point in epochs
    against a length in iterations (or the reverse) needs the iterations per epoch, which the
    dataset gives: `compress.run.setup.check_rewind` checks that before training starts."""
    lot, train = recipe.lottery, recipe.train
    if not METHODS[lot.method].pruning_rounds(lot):
        return None  # no round rewinds
    value, unit = float(lot.rewind[:-2]), lot.rewind[-2:]
    length, length_unit = ((train.iterations, "iterations") if train.iterations is not None
                           else (train.epochs, "epochs"))
    if (unit == "it") != (length_unit == "iterations") or value <= length:
        return None
    return (f"'{lot.rewind}' is beyond the end of a round's training (train.{length_unit}: "
            f"{length:g}); the rewind point must lie within it")


def _check_duration(value: str) -> str:
    if not re.match(DURATION_PATTERN, value):
        raise ValueError(f"'{value}' is not a duration: write iterations like '500it' or epochs like '1ep'")
    return value
