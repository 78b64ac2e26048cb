"""Shared fixtures; every test under tests/integration/ is marked `slow`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from support.recipes import NO_STAGES, ROOT, TINY, set_args

from compress.cli import main

# One intra-op thread for every test, fixtures included: results then repeat across processes
# (the summation order of a 2-thread reduction differs from a 1-thread one).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_lottery_run(tmp_path_factory) -> Path:
    """A finished tiny 2-round Mask R-CNN run (lottery only, no export/eval/bench)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    code = main(["-q", "run", str(ROOT / "recipes" / "maskrcnn_lth.yaml"), "--smoke", "--out", str(out),
                 *set_args(TINY + NO_STAGES)])
    assert code == 0
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = Path(__file__).parent / "integration"
    for item in items:
        if integration in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)
