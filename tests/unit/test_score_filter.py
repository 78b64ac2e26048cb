"""One score filter (compress.evaluate.runtimes.pipeline.keep_scores) for the deployment's from_canvas and
every `compress predict` model: per-detection outputs filtered, numpy and torch alike."""
from __future__ import annotations

import numpy as np
import torch

import compress.stages.predictors as predictors
from compress.evaluate.runtimes.pipeline import Placement, from_canvas, keep_scores


def _outputs(kind):
    scores = [0.9, 0.2, 0.5, 0.49]
    make = torch.tensor if kind == "torch" else np.array
    return {"scores": make(scores), "labels": make([1, 2, 3, 4]),
            "boxes": make([[i, i, i + 1, i + 1] for i in range(4)], dtype=make([0.0]).dtype),
            "masks": make(np.zeros((4, 1, 2, 2), dtype=np.float32)), "image_size": make([7, 9, 3])}


def test_keeps_the_detections_scoring_at_least_the_threshold_numpy_and_torch():
    for kind in ("numpy", "torch"):
        kept = keep_scores(_outputs(kind), 0.5)
        assert [round(float(s), 3) for s in kept["scores"]] == [0.9, 0.5]
        assert [int(v) for v in kept["labels"]] == [1, 3]
        assert tuple(kept["masks"].shape) == (2, 1, 2, 2) and len(kept["boxes"]) == 2
        assert len(kept["image_size"]) == 3  # not one row per detection: left as it is
        assert all(torch.is_tensor(v) == (kind == "torch") for v in kept.values())


def test_no_threshold_or_no_scores_keeps_everything():
    outputs = _outputs("numpy")
    assert keep_scores(outputs, None) is outputs
    no_scores = {"boxes": outputs["boxes"]}
    assert keep_scores(no_scores, 0.5) is no_scores


def test_predict_and_the_deployment_use_the_one_filter():
    assert predictors.keep_scores is keep_scores
    outputs = _outputs("numpy")
    out = from_canvas(outputs, Placement(1.0, 2, 2, (2, 2)), score_threshold=0.5)
    assert [int(v) for v in out["labels"]] == [1, 3]
