"""The engines a user can name, in one registry: what each runs, what it needs, where it is offered.

Every engine name the CLI offers, a recipe accepts or evaluate / predict / bench dispatch on comes
from `ENGINES` (tests/unit/test_engine_registry.py fails on a list of engine names anywhere else).
An engine runs one of three things from a run: `ticket` (the torch model), `full_graph` (the
exported ONNX graph) or `deployment` (the partition in export/deploy: its heavy parts on the engine,
the glue on ONNX Runtime). Plain data: importing it loads no runtime, so the CLI's help stays light.
"""
from __future__ import annotations

from dataclasses import dataclass

# what an engine runs (`full_graph` and `deployment` are also the runners of a pipeline row)
TICKET, FULL_GRAPH, DEPLOYMENT = "ticket", "full_graph", "deployment"
# the library behind an engine
TORCH, ONNXRUNTIME, DEEPSPARSE, OPENVINO = "torch", "onnxruntime", "deepsparse", "openvino"
# where a user may name an engine
EVALUATE = "evaluate"  # `compress evaluate --engine`, a recipe's evaluate.engines
PREDICT = "predict"  # `compress predict --engine`
BENCH = "bench"  # `compress bench MODEL.onnx --engine`, a recipe's bench.engines
PIPELINE = "pipeline"  # the detector end to end: `compress bench RUN/export`, the bench stage


@dataclass(frozen=True)
class Engine:
    """One engine: its name, the library behind it, what it runs and what it needs."""

    name: str
    runtime: str  # TORCH, ONNXRUNTIME, DEEPSPARSE or OPENVINO
    runs: str  # what it runs from a run's export by default: TICKET, FULL_GRAPH or DEPLOYMENT
    uses: frozenset[str] = frozenset()  # EVALUATE, PREDICT, BENCH, PIPELINE
    deploys: bool = False  # it can run the deployment's heavy parts (DeployedDetector)
    provider: str | None = None  # ONNX Runtime's execution provider
    precision: str | None = None  # OpenVINO's INFERENCE_PRECISION_HINT; None: its CPU default
    needs_gpu: bool = False
    extra: str | None = None  # the optional extra it needs: pip install 'lth-compress[<extra>]'

    @property
    def needs_export(self) -> bool:
        """It runs an exported graph, so the export stage must have run."""
        return self.runs != TICKET


def _registry(*engines: Engine) -> dict[str, Engine]:
    return {engine.name: engine for engine in engines}


# in the order users see them (choices, error messages, bench rows)
ENGINES: dict[str, Engine] = _registry(
    Engine("torch", TORCH, TICKET, frozenset({EVALUATE, PREDICT})),
    Engine("onnxruntime", ONNXRUNTIME, FULL_GRAPH, frozenset({EVALUATE, PREDICT, BENCH, PIPELINE}),
           deploys=True, provider="cpu"),
    Engine("onnxruntime-cuda", ONNXRUNTIME, FULL_GRAPH, frozenset({BENCH}), provider="cuda",
           needs_gpu=True),
    Engine("deepsparse", DEEPSPARSE, DEPLOYMENT, frozenset({EVALUATE, PREDICT, BENCH, PIPELINE}),
           deploys=True),
    # the competitor, for the benchmarks only: OpenVINO's default precision, and pinned to f32
    Engine("openvino", OPENVINO, DEPLOYMENT, deploys=True, extra="openvino"),
    Engine("openvino-fp32", OPENVINO, DEPLOYMENT, deploys=True, precision="f32", extra="openvino"),
)


def names(use: str) -> tuple[str, ...]:
    """The engines offered for `use`, in the registry's order."""
    return tuple(name for name, engine in ENGINES.items() if use in engine.uses)


def running(runs: str, use: str) -> str:
    """The engine of `use` that runs `runs` (TICKET, FULL_GRAPH, DEPLOYMENT): the default engine
    for that kind of model."""
    return next(name for name in names(use) if ENGINES[name].runs == runs)


EVALUATE_ENGINES = names(EVALUATE)
PREDICT_ENGINES = names(PREDICT)
BENCH_ENGINES = names(BENCH)
PIPELINE_ENGINES = names(PIPELINE)
DEPLOYMENT_ENGINES = tuple(name for name, engine in ENGINES.items() if engine.deploys)
OPENVINO_ENGINES = tuple(name for name, engine in ENGINES.items() if engine.runtime == OPENVINO)
# a recipe's evaluate.engines unless it says: the two that need no DeepSparse
DEFAULT_EVALUATE_ENGINES = ("torch", "onnxruntime")
