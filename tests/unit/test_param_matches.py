"""The shortfall check selects a modifier's params by SparseML's rule (compress.core.param_names):
`re:` patterns `re.match` (anchored at the start only), `__ALL__` / `__ALL_PRUNABLE__` take all."""
from __future__ import annotations

import pytest

from compress.core.param_names import param_matches
from compress.run.shortfall import shortfalls

LAYERS = {"backbone.body.layer1.0.conv1.weight": {"numel": 100, "zeros": 10},
          "backbone.body.layer2.0.conv1.weight": {"numel": 100, "zeros": 10}}


def _target(params) -> list[dict]:
    return [{"params": params, "target": 0.8, "end_epoch": 4.0}]


@pytest.mark.parametrize("pattern, name, hit", [
    ("re:backbone.body.layer1", "backbone.body.layer1.0.conv1.weight", True),  # match, not fullmatch
    ("re:layer1", "backbone.body.layer1.0.conv1.weight", False),  # anchored at the start
    ("backbone.body.layer1", "backbone.body.layer1.0.conv1.weight", False),  # a name is equal
    ("a.weight", "a.weight", True),
])
def test_param_matches_is_sparsemls_rule(pattern, name, hit):
    assert param_matches(pattern, name) is hit


@pytest.mark.parametrize("params", ["re:backbone.body.layer", ["re:backbone.body.layer1",
                                                                 "re:backbone.body.layer2.0"],
                                    "__ALL__", ["__ALL_PRUNABLE__"], "__ALL_PRUNABLE__"])
def test_shortfall_sees_the_tensors_sparseml_prunes(params):
    (message,) = shortfalls(_target(params), LAYERS, trained_epochs=1.0)
    assert "reached sparsity 0.10 of target 0.80 over 2 tensors" in message
