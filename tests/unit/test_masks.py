"""Pure magnitude pruning, mask holding and rewinding on the tiny Mask R-CNN."""
from __future__ import annotations

import copy

import pytest
import torch

from compress.core.errors import ModelFileError
from compress.lottery.masks import (MaskHolder, apply_mask, dense_mask, early_bird_iou, is_nested,
                            load_mask, magnitude_prune, mask_from_model, mask_iou, rewind,
                            save_mask, sparsity_report)
from compress.models.build import build_model
from compress.models.prunable import select_prunable
from support.tiny_training import sgd, train_steps


def tiny_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("maskrcnn", "tiny", 3, min_size=64, max_size=64)


def kept(mask) -> int:
    return sum(int(m.sum()) for m in mask.values())


def test_three_global_imp_rounds_exact():
    torch.set_num_threads(1)
    model = tiny_model()
    names = select_prunable(model)
    train_steps(model, sgd(model), 1)
    rewind_state = copy.deepcopy(model.state_dict())
    mask = dense_mask(model, names)
    total = kept(mask)
    expected_kept = total
    for k in range(1, 5):
        holder = MaskHolder(model, mask)
        checks = []
        start = model.state_dict()[names[-1]].clone()
        train_steps(model, sgd(model), 2, after_each=lambda: checks.append(holder.check(model)))
        holder.remove()
        assert checks == [0, 0]  # round k-1 trained with its mask held after every step
        assert not torch.equal(model.state_dict()[names[-1]], start)
        if k == 4:
            break
        new = magnitude_prune(model.state_dict(), mask, 0.2, "global")
        expected_kept -= round(0.2 * expected_kept)
        assert kept(new) == expected_kept
        assert is_nested(mask, new) and not is_nested(new, mask)
        rewind(model, rewind_state, new)
        report = sparsity_report(model, new)
        assert abs(report["prunable"]["sparsity"] - (1 - 0.8 ** k)) < 1e-3
        assert report["prunable"]["zeros"] == total - expected_kept
        state = model.state_dict()
        for name, value in rewind_state.items():
            if name in new:
                assert torch.equal(state[name][new[name]], value[new[name]])
                assert bool((state[name][~new[name]] == 0).all())
            else:
                assert torch.equal(state[name], value)  # buffers and non-prunable params too
        mask = new


def test_layerwise_every_tensor_exact():
    gen = torch.Generator().manual_seed(1)
    weights = {f"w{i}": torch.randn(n, generator=gen) for i, n in enumerate([7, 10, 33, 250, 1001])}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    for _ in range(3):
        new = magnitude_prune(weights, mask, 0.3, "layerwise")
        for name in weights:
            before = int(mask[name].sum())
            assert int(new[name].sum()) == before - round(0.3 * before)
            dropped = mask[name] & ~new[name]
            if dropped.any():  # the dropped ones are the smallest of the tensor's kept weights
                assert weights[name].abs()[dropped].max() <= weights[name].abs()[new[name]].min()
        assert is_nested(mask, new)
        mask = new


def test_global_one_threshold_tensor_sparsities_differ():
    model = tiny_model()
    names = select_prunable(model)
    state = model.state_dict()
    new = magnitude_prune(state, dense_mask(model, names), 0.5, "global")
    pruned = torch.cat([state[n][~new[n]].abs() for n in names])
    kept_values = torch.cat([state[n][new[n]].abs() for n in names])
    threshold = pruned.max()
    assert bool((pruned <= threshold).all()) and bool((kept_values > threshold).all())
    per_tensor = [1 - new[n].float().mean().item() for n in names]
    assert max(per_tensor) - min(per_tensor) > 0.2  # different fan-ins -> different sparsities


def test_prune_never_touches_non_prunable_and_only_shrinks():
    model = tiny_model()
    names = select_prunable(model)
    before = copy.deepcopy(model.state_dict())
    mask = dense_mask(model, names)
    first = magnitude_prune(model.state_dict(), mask, 0.4, "global")
    with torch.no_grad():  # pruned weights grow large: they must stay pruned and not count
        for name in names:
            model.state_dict()[name][~first[name]] = 100.0
    second = magnitude_prune(model.state_dict(), first, 0.4, "global")
    assert is_nested(first, second)
    assert kept(second) == kept(first) - round(0.4 * kept(first))
    apply_mask(model, second)
    for name, value in model.state_dict().items():
        if name not in names:
            assert torch.equal(value, before[name])
    read_back = mask_from_model(model, names)
    assert all(torch.equal(read_back[n], second[n]) for n in names)


def test_ties_are_exact_and_deterministic():
    weights = {"a": torch.ones(10), "b": torch.ones(10)}
    mask = {n: torch.ones(10, dtype=torch.bool) for n in weights}
    new = magnitude_prune(weights, mask, 0.25, "global")
    assert 20 - kept(new) == 5
    assert int((~new["a"]).sum()) == 5 and new["b"].all()  # lower positions go first
    assert all(torch.equal(new[n], magnitude_prune(weights, mask, 0.25, "global")[n]) for n in new)
    with pytest.raises(ValueError):
        magnitude_prune(weights, mask, 1.0, "global")
    with pytest.raises(ValueError):
        magnitude_prune(weights, mask, 0.2, "random")
    assert kept(magnitude_prune(weights, mask, 0.0, "layerwise")) == 20


def test_holder_keeps_zeros_under_momentum_and_decay_and_plain_sgd_does_not():
    torch.set_num_threads(1)
    model = tiny_model()
    names = select_prunable(model)
    mask = magnitude_prune(model.state_dict(), dense_mask(model, names), 0.5, "layerwise")
    plain = copy.deepcopy(model)
    apply_mask(plain, mask)
    train_steps(plain, sgd(plain), 2)
    assert sum(int((plain.state_dict()[n][~mask[n]] != 0).sum()) for n in names) > 0
    optimizer = sgd(model)
    train_steps(model, optimizer, 1)  # dense momentum history: grad hooks alone would not hold
    holder = MaskHolder(model, mask)
    counts = []
    train_steps(model, optimizer, 3,
                after_each=lambda: (holder.after_step(), counts.append(holder.check(model))))
    assert counts == [0, 0, 0]
    assert all(p.grad is None or bool((p.grad[~mask[n]] == 0).all())
               for n, p in model.named_parameters() if n in mask)
    holder.remove()


def test_sparsity_report_counts():
    model = tiny_model()
    names = select_prunable(model)
    mask = magnitude_prune(model.state_dict(), dense_mask(model, names), 0.3, "layerwise")
    apply_mask(model, mask)
    report = sparsity_report(model, mask)
    params = dict(model.named_parameters())
    all_zeros = sum(int((p == 0).sum()) for p in params.values())
    all_numel = sum(p.numel() for p in params.values())
    assert report["network"] == {"numel": all_numel, "zeros": all_zeros,
                                 "sparsity": all_zeros / all_numel}
    assert set(report["layers"]) == set(names)
    assert report["prunable"]["zeros"] == sum(int((~m).sum()) for m in mask.values())
    layer = report["layers"][names[0]]
    assert layer["numel"] == params[names[0]].numel()
    assert layer["sparsity"] == pytest.approx(round(0.3 * layer["numel"]) / layer["numel"])
    assert report["network"]["sparsity"] < report["prunable"]["sparsity"]


def test_mask_iou_and_nesting_by_hand():
    a = {"x": torch.tensor([True, True, False, False, True, True])}
    b = {"x": torch.tensor([True, False, False, True, True, True])}
    assert mask_iou(a, b) == pytest.approx(1 / 3)  # pruned {2,3} vs {1,2}: 1 / 3
    assert mask_iou(a, b, of="kept") == pytest.approx(3 / 5)
    assert mask_iou(a, a) == 1.0
    assert not is_nested(a, b)
    assert is_nested(a, {"x": torch.tensor([True, False, False, False, False, True])})


def test_early_bird_iou():
    gen = torch.Generator().manual_seed(3)
    weights = {"w": torch.randn(1000, generator=gen)}
    mask = {"w": torch.ones(1000, dtype=torch.bool)}
    assert early_bird_iou(weights, weights, mask, 0.2, "global") == 1.0
    noisy = {"w": weights["w"] + 0.05 * torch.randn(1000, generator=gen)}
    iou = early_bird_iou(weights, noisy, mask, 0.2, "global")
    early = weights["w"].abs().argsort()[:200]
    late = noisy["w"].abs().argsort()[:200]
    reference = len(set(early.tolist()) & set(late.tolist())) / len(set(early.tolist()) | set(late.tolist()))
    assert iou == pytest.approx(reference) and 0.5 < iou < 1.0


def test_save_load_mask_validates(tmp_path):
    model = tiny_model()
    names = select_prunable(model)
    mask = magnitude_prune(model.state_dict(), dense_mask(model, names), 0.2, "global")
    save_mask(tmp_path / "mask.pt", mask)
    loaded = load_mask(tmp_path / "mask.pt", model)
    assert list(loaded) == names and all(torch.equal(loaded[n], mask[n]) for n in names)
    torch.save({"nope.weight": mask[names[0]]}, tmp_path / "bad_name.pt")
    torch.save({names[0]: mask[names[1]]}, tmp_path / "bad_shape.pt")
    torch.save({names[0]: mask[names[0]].float()}, tmp_path / "bad_dtype.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    for bad in ("bad_name", "bad_shape", "bad_dtype", "garbage", "missing"):
        with pytest.raises(ModelFileError, match=bad):
            load_mask(tmp_path / f"{bad}.pt", model)
