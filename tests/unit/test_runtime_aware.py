"""Runtime-aware tickets: the allocator, the latency-profile cache, and IMP with distribution runtime."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import compress.lottery.profile as profile_mod
from compress.lottery.allocator import LayerCurve, runtime_allocation, global_allocation, layer_curves
from compress.lottery.masks import prune_to_counts
from compress.lottery.profile import GRID, build_profile, predicted_latency_ms
from compress.recipe.load import load_recipe, resolved_yaml

GRID_ARR = np.asarray(GRID)


def curve(name: str, numel: int, latency: list[float], zeros_now: int = 0, cap: float = 0.98,
          scale: float = 1.0, seed: int = 0) -> LayerCurve:
    rng = np.random.default_rng(seed)
    kept = np.sort(np.abs(rng.normal(0, scale, numel - zeros_now)))
    return LayerCurve(name, numel, zeros_now, max(zeros_now, int(cap * numel)), kept, GRID_ARR,
                      np.asarray(latency, dtype=float))


FLAT = [10.0] * 7
STEEP = [40.0, 30.0, 20.0, 15.0, 8.0, 5.0, 4.0]


def test_allocator_exact_total_caps_and_floors():
    curves = [curve("stem", 500, FLAT, cap=0.5), curve("a", 4000, STEEP, zeros_now=1000, seed=1),
              curve("b", 3000, FLAT, zeros_now=300, seed=2)]
    for total in (1300, 2500, 4000, 5000):
        result = runtime_allocation(curves, total, mass_bound=0.5)
        assert sum(result.zeros.values()) == total
        for c in curves:
            assert c.zeros_now <= result.zeros[c.name] <= c.zeros_max
    with pytest.raises(ValueError):
        runtime_allocation(curves, 1299)  # below the zeros already there
    with pytest.raises(ValueError):
        runtime_allocation(curves, sum(c.zeros_max for c in curves) + 1)


def test_allocator_prefers_the_expensive_layer_that_speeds_up():
    # same weight scale: global magnitude spreads evenly; the allocator should load the steep layer
    curves = [curve("flat", 5000, FLAT, seed=3), curve("steep", 5000, STEEP, seed=4)]
    total = 8000  # 80% overall
    runtime, reference = runtime_allocation(curves, total, mass_bound=1.0), global_allocation(curves, total)
    assert runtime.zeros["steep"] > reference.zeros["steep"]
    assert runtime.zeros["steep"] >= int(0.9 * 5000)
    assert runtime.predicted_ms < reference.predicted_ms


def test_allocator_guard_bounds_the_magnitude_mass():
    # the steep layer holds large weights: moving zeros there costs mass, the guard limits it
    curves = [curve("small", 5000, FLAT, seed=5, scale=0.1), curve("steep", 5000, STEEP, seed=6)]
    total = 5000
    loose = runtime_allocation(curves, total, mass_bound=100.0)
    tight = runtime_allocation(curves, total, mass_bound=0.1)
    reference = global_allocation(curves, total)
    assert tight.mass_removed <= 1.1 * reference.mass_removed + 1e-9
    assert loose.mass_removed > tight.mass_removed
    assert tight.predicted_ms >= loose.predicted_ms
    zero_bound = runtime_allocation(curves, total, mass_bound=0.0)
    assert zero_bound.zeros == reference.zeros


def test_layer_curves_stem_cap_and_prune_to_counts_nested():
    torch.manual_seed(0)
    weights = {"stem": torch.randn(8, 3, 3, 3), "body": torch.randn(16, 8, 3, 3)}
    mask = {n: torch.rand_like(w) > 0.3 for n, w in weights.items()}
    prof = {"grid": list(GRID), "layers": {"body": {"status": "ok", "latency_ms": STEEP}}}
    curves = layer_curves(weights, mask, prof, max_layer_sparsity=0.9, stem_max_sparsity=0.5)
    stem, body = curves
    assert stem.zeros_max == max(stem.zeros_now, int(0.5 * 216))
    assert body.zeros_max == int(0.9 * 1152)
    assert np.all(stem.latency_ms == 0)  # unprofiled: flat
    zeros = runtime_allocation(curves, stem.zeros_now + body.zeros_now + 300).zeros
    new = prune_to_counts(weights, mask, zeros)
    for name in weights:
        assert int((~new[name]).sum()) == zeros[name]
        assert not bool((new[name] & ~mask[name]).any())
        dropped = weights[name][mask[name] & ~new[name]].abs()
        if dropped.numel():
            assert dropped.max() <= weights[name][new[name]].abs().min()
    with pytest.raises(ValueError):
        prune_to_counts(weights, mask, {n: 0 for n in weights})


class TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1)  # same signature as b: timed once

    def forward(self, x):
        return self.c(self.b(self.a(x)))


def test_profile_cache_key_resume_and_dedup(tmp_path, monkeypatch):
    calls: list[tuple] = []

    def fake_time(module, shape, grid, cores, warmup, iterations):
        calls.append(tuple(shape))
        return {"status": "ok", "latency_ms": [float(module.weight.numel()) * (1 - s) for s in grid]}

    monkeypatch.setattr(profile_mod, "time_layer", fake_time)
    model, names = TwoConvs(), ["a.weight", "b.weight", "c.weight"]
    path = tmp_path / "p.json"
    data = build_profile(model, names, 16, 2, path, arch="x", backbone="y", progress=False)
    assert calls == [(1, 3, 16, 16), (1, 8, 16, 16)]
    assert data["layers"]["b.weight"]["latency_ms"] == data["layers"]["c.weight"]["latency_ms"]
    assert data["key"]["cores"] == 2 and data["key"]["image_size"] == 16
    # resume: drop one finished layer from the file; only it is timed again
    saved = json.loads(path.read_text())
    del saved["layers"]["a.weight"]
    path.write_text(json.dumps(saved))
    calls.clear()
    build_profile(model, names, 16, 2, path, arch="x", backbone="y", progress=False)
    assert calls == [(1, 3, 16, 16)]
    # another key (cores, image size) does not reuse the file's layers
    calls.clear()
    other = build_profile(model, names, 16, 1, path, arch="x", backbone="y", progress=False)
    assert len(calls) == 2 and other["key"]["cores"] == 1
    assert profile_mod.default_profile_path(other["key"]) != profile_mod.default_profile_path(data["key"])
    pred = predicted_latency_ms(other, {"a.weight": 0.85})
    assert pred["a.weight"] == pytest.approx(216 * 0.15)


def test_profile_times_a_layer_on_deepsparse():
    pytest.importorskip("deepsparse")
    timed = profile_mod.time_layer(nn.Conv2d(4, 8, 3), [1, 4, 16, 16], [0.0, 0.9], 1, 1, 2)
    assert timed["status"] == "ok", timed
    assert len(timed["latency_ms"]) == 2 and all(v > 0 for v in timed["latency_ms"])


RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "maskrcnn_lth.yaml"
TINY_RUN = [
    "model.backbone=tiny", "model.min_size=64", "model.max_size=64",
    "data.synthetic.image_size=64", "data.synthetic.train_images=8",
    "data.synthetic.val_images=4", "train.iterations=6", "train.batch_size=2",
    "lottery.rewind=2it", "train.lr_steps=[5it]", "train.warmup_iters=2",
    "model.heads.fpn_channels=16", "model.heads.representation_size=32",
    "model.heads.mask_head_channels=8", "model.heads.box_detections_per_img=10",
    "model.heads.rpn_pre_nms_top_n_train=100", "model.heads.rpn_post_nms_top_n_train=50",
    "model.heads.rpn_pre_nms_top_n_test=50", "model.heads.rpn_post_nms_top_n_test=20",
    "model.heads.box_batch_size_per_image=16", "evaluate.max_images=2",
    "lottery.rounds=2", "lottery.distribution=runtime", "lottery.early_bird=false",
]


def _synthetic_latency(module, shape, grid, cores, warmup, iterations):
    """Large feature maps speed up with sparsity, the rest are flat (a made-up runtime)."""
    base = float(module.weight.numel())
    steep = len(shape) == 4 and shape[-1] >= 16
    return {"status": "ok", "latency_ms": [base * ((1 - s) if steep else 1.0) for s in grid]}


@pytest.fixture(scope="module")
def runtime_run(tmp_path_factory):
    from compress.core.seeding import seed_everything
    from compress.run import pipeline
    from compress.core.folders import RunFolder

    root = tmp_path_factory.mktemp("runtime")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(profile_mod, "time_layer", _synthetic_latency)
        mp.setenv("COMPRESS_PROFILE_DIR", str(root / "profiles"))
        torch.set_num_threads(1)
        recipe = load_recipe(RECIPE, smoke=True, overrides=TINY_RUN)
        run = RunFolder(root / "run")
        run.root.mkdir(parents=True)
        seed_everything(recipe.train.seed)
        pipeline.find_ticket(recipe, run, False)
    return run


def test_imp_runtime_distribution(runtime_run):
    from compress.lottery.masks import magnitude_prune

    run = runtime_run
    assert (run.root / "profile.json").is_file()
    masks = [torch.load(run.round(k).root / "mask.pt", weights_only=True) for k in range(3)]
    numel = sum(m.numel() for m in masks[0].values())
    kept = [sum(int(m.sum()) for m in mask.values()) for mask in masks]
    spread_differs = False
    for k in (1, 2):
        assert kept[k] == kept[k - 1] - round(0.2 * kept[k - 1])  # geometric total, exact
        for name, new in masks[k].items():
            assert not bool((new & ~masks[k - 1][name]).any()), name  # nested
        metrics = json.loads((run.round(k).root / "metrics.json").read_text())
        assert metrics["metrics"]["pruned_nonzero_after_training"] == 0  # zeros held
        assert metrics["metrics"]["runtime_predicted_ms"] <= metrics["metrics"]["global_predicted_ms"]
        state = torch.load(run.round(k).root / "checkpoint.pt", weights_only=True)["model"]
        assert all(bool((state[n][~m] == 0).all()) for n, m in masks[k].items())
        before = torch.load(run.round(k - 1).root / "checkpoint.pt", weights_only=True)["model"]
        glob = magnitude_prune({n: before[n] for n in masks[k - 1]}, masks[k - 1], 0.2, "global")
        spread_differs |= any(int(glob[n].sum()) != int(masks[k][n].sum()) for n in glob)
        report = json.loads((run.round(k).root / "sparsity.json").read_text())
        assert set(report["layers"]) == set(masks[k])
    assert spread_differs
    assert 1 - kept[2] / numel == pytest.approx(1 - 0.8 ** 2, abs=1e-3)


def _fake_run(root: Path, distribution: str, spread: dict[str, float], measured_ms: float,
              with_profile: bool):
    from compress.report.run_data import RunData

    (root / "rounds" / "round_1").mkdir(parents=True)
    (root / "bench").mkdir()
    recipe = load_recipe(RECIPE, smoke=True, overrides=[f"lottery.distribution={distribution}"])
    (root / "recipe.yaml").write_text(resolved_yaml(recipe))
    layers = {n: {"numel": 100, "zeros": int(s * 100), "sparsity": s} for n, s in spread.items()}
    (root / "rounds" / "round_1" / "sparsity.json").write_text(json.dumps({"layers": layers}))
    (root / "bench" / "bench.json").write_text(json.dumps([
        {"engine": "deepsparse", "graph": "backbone.onnx", "batch": 1, "status": "ok",
         "p50_ms": measured_ms}]))
    if with_profile:
        flags = {"avx2": True, "avx512": False, "vnni": False}
        prof = {"grid": list(GRID), "key": {"cores": 2, "image_size": 64, "cpu": "x", "flags": flags},
                "layers": {n: {"status": "ok", "latency_ms": [10 * (1 - g) for g in GRID]}
                           for n in spread}}
        (root / "profile.json").write_text(json.dumps(prof))
    return RunData(root, distribution, {}, [{"round": 0, "prunable_sparsity": 0.0},
                                            {"round": 1, "prunable_sparsity": 0.5}])


def test_report_runtime_section(tmp_path):
    from compress.report.page import Section
    from compress.report.runtime import sec_runtime

    names = ["backbone.body.conv1.weight", "backbone.fpn.x.weight", "roi_heads.fc6.weight"]
    glob = _fake_run(tmp_path / "g", "global", dict(zip(names, (0.1, 0.5, 0.9))), 20.0, False)
    rt = _fake_run(tmp_path / "r", "runtime", dict(zip(names, (0.5, 0.9, 0.1))), 12.0, True)
    section = Section("runtime", "t")
    (tmp_path / "plots").mkdir()
    sec_runtime(section, [glob, rt], tmp_path / "plots")
    assert section.figures and Path(section.figures[0].path).is_file()
    rows = section.tables[0].rows
    # predicted = sum over backbone.* layers of 10 * (1 - s): global 9 + 5 = 14, runtime 5 + 1 = 6
    assert [r[1] for r in rows] == ["global", "runtime"]
    assert float(rows[0][3]) == pytest.approx(14.0) and float(rows[1][3]) == pytest.approx(6.0)
    assert float(rows[1][4]) == pytest.approx(12.0)
    assert "avx2" in section.tables[0].title and "avx512" not in section.tables[0].title


def test_profile_command_on_the_recipe_model(tmp_path, monkeypatch):
    from compress.run.profile import format_profile, profile_recipe

    monkeypatch.setattr(profile_mod, "time_layer", _synthetic_latency)
    out = tmp_path / "p.json"
    path, data = profile_recipe(RECIPE, out=out, smoke=True, overrides=TINY_RUN[:-3], progress=False,
                                cores=2)
    assert path == out and json.loads(out.read_text())["layers"] == data["layers"]
    assert data["key"]["image_size"] == 64 and data["key"]["arch"] == "maskrcnn"
    assert any(n.startswith("backbone.body") for n in data["layers"])
    assert not any("cls_score" in n or "downsample" in n for n in data["layers"])
    assert "backbone.body.conv1.weight" in format_profile(data)


def test_runtime_distribution_needs_a_magnitude_method():
    from compress.core.errors import RecipeError
    from compress.recipe.load import load_recipe

    recipe = load_recipe(RECIPE, smoke=True, overrides=["lottery.distribution=runtime"])
    assert recipe.lottery.runtime.max_layer_sparsity == 0.98
    with pytest.raises(RecipeError, match="runtime"):
        load_recipe(RECIPE, smoke=True, overrides=["lottery.distribution=runtime",
                                                   "lottery.method=mask_transfer",
                                                   "lottery.source=random-init:0",
                                                   "lottery.target_sparsity=0.5"])


def test_latency_curve_is_the_non_increasing_fit():
    from compress.lottery.profile import latency_curve, non_increasing

    assert non_increasing([1.0, 3.0, 2.0]).tolist() == [2.0, 2.0, 2.0]
    assert non_increasing([5.0, 6.0, 7.0, 6.0, 4.0]).tolist() == [6.0, 6.0, 6.0, 6.0, 4.0]
    assert non_increasing(STEEP).tolist() == STEEP  # already monotone: unchanged
    noisy = [114.81, 62.92, 138.29, 99.31, 82.64, 97.03, 98.74]  # one layer, idle AVX2 host
    fit = non_increasing(noisy)
    assert np.all(np.diff(fit) <= 0) and fit.sum() == pytest.approx(sum(noisy))
    prof = {"grid": list(GRID), "layers": {"a": {"status": "ok", "latency_ms": noisy},
                                           "b": {"status": "failed"}}}
    assert latency_curve(prof, "b") is None and latency_curve(prof, "zz") is None
    # the prediction reads the fitted curve: the dip at 50% is not there to exploit
    assert predicted_latency_ms(prof, {"a": 0.5})["a"] == pytest.approx(fit[1])
    assert fit[1] > 100.0


def _uniform(curves, sparsity):
    return sum(float(c.latency(np.asarray([round(sparsity * c.numel)]))[0]) for c in curves)


def test_allocator_beats_uniform_and_global_on_step_curves():
    # DeepSparse-like curves: flat while a dense kernel runs, then dropping; layers of different
    # sizes. The first allocator (Lagrangian settled by magnitude) predicted worse than uniform here.
    shapes = [[10, 10, 6, 5, 4, 3, 3], [40, 40, 38, 20, 12, 10, 9], [5, 5, 5, 5, 4.5, 4, 4],
              [20, 21, 14, 12, 9, 8, 8]]
    curves = [curve(f"l{i}", n, lat, seed=10 + i, cap=0.98)
              for i, (n, lat) in enumerate(zip((3000, 9000, 20000, 6000), shapes))]
    total = round(0.8 * sum(c.numel for c in curves))
    runtime = runtime_allocation(curves, total, mass_bound=10.0)
    assert sum(runtime.zeros.values()) == total
    assert runtime.predicted_ms <= _uniform(curves, 0.8) + 1e-9
    assert runtime.predicted_ms < global_allocation(curves, total).predicted_ms


def test_allocator_matches_exhaustive_search_on_convex_curves():
    convex = [[12, 9, 7, 6, 5, 4.6, 4.4], [30, 20, 14, 10, 8, 7, 6.5], [8, 7, 6.2, 5.6, 5.2, 5, 4.9]]
    curves = [curve(f"c{i}", 200, lat, seed=20 + i, cap=0.98) for i, lat in enumerate(convex)]
    total = 330
    got = runtime_allocation(curves, total, mass_bound=1e6)  # latency first
    best = min(
        float(curves[0].latency(np.asarray([a]))[0] + curves[1].latency(np.asarray([b]))[0]
              + curves[2].latency(np.asarray([total - a - b]))[0])
        for a in range(0, curves[0].zeros_max + 1) for b in range(0, curves[1].zeros_max + 1)
        if 0 <= total - a - b <= curves[2].zeros_max)
    assert got.predicted_ms == pytest.approx(best, abs=0.02)


def test_head_shapes_follow_the_model_settings_not_its_detections():
    """`compress profile` (a fresh 91-class model) and a run (its trained few-class model) must key
    the same profile: the heads take the deployment's RoI counts, whatever the weights detect."""
    from compress.lottery.profile import layer_input_shapes, profile_key
    from compress.models.build import build_model
    from compress.models.prunable import select_prunable

    keys, shapes = [], []
    for seed, classes, thresh in ((0, 91, 0.05), (1, 3, 0.0)):
        torch.manual_seed(seed)
        model = build_model("maskrcnn", "tiny", classes, min_size=64, max_size=64).eval()
        model.roi_heads.score_thresh = thresh  # none detected vs every proposal kept
        names = select_prunable(model, scope="all")
        found = layer_input_shapes(model, names, 64)
        shapes.append(found)
        keys.append(profile_key(model, names, found, "maskrcnn", "tiny", 64, 2))
    assert keys[0] == keys[1]
    found, model = shapes[1], model
    for name, shape in found.items():
        if name.startswith("roi_heads.box_head."):
            assert shape[0] == model.rpn._post_nms_top_n["testing"]
        elif name.startswith(("roi_heads.mask_head.", "roi_heads.mask_predictor.")):
            assert shape[0] == model.roi_heads.detections_per_img
