"""MAC counting: exact effective-MAC arithmetic on the tiny model, formulas, and fvcore agreement."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from compress.models.build import build_model
from compress.models.prunable import default_prunable
from compress.evaluate.analysis.macs import count_macs, example_images, heads_at_capacity, layer_call_macs, macs_summary


def _fvcore(model: nn.Module, size: int):
    """fvcore's per-module and per-operator counts on the same forward count_macs runs."""
    model.eval()
    with torch.no_grad(), heads_at_capacity(model):
        analysis = FlopCountAnalysis(model, (example_images(size),))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        return analysis.by_module(), analysis.by_operator()


def _hand_mask(model: nn.Module) -> dict[str, torch.Tensor]:
    """Half of the prunable layers masked, at uneven densities (one fully kept, one emptied)."""
    generator = torch.Generator().manual_seed(3)
    params = dict(model.named_parameters())
    densities = [0.1, 0.37, 0.5, 0.9, 1.0, 0.0, 0.73]
    mask = {}
    for i, name in enumerate(default_prunable(model)[::2]):
        keep = torch.rand(params[name].shape, generator=generator) < densities[i % len(densities)]
        mask[name] = keep
    return mask


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("maskrcnn", "tiny", num_classes=3, min_size=64, max_size=64).eval()


def test_effective_macs_exact_on_tiny_model(tiny_model: nn.Module) -> None:
    torch.set_num_threads(1)
    mask = _hand_mask(tiny_model)
    result = count_macs(tiny_model, 64, mask=mask)
    by_module, _ = _fvcore(tiny_model, 64)
    layers = result["layers"]
    # dense MACs per layer agree with fvcore exactly, so the reference below is independent
    assert {name: by_module[name] for name in layers} == {n: e["dense"] for n, e in layers.items()}
    assert any(e["type"] == "deconv" for e in layers.values())
    assert any(e["type"] == "linear" for e in layers.values())
    reference, non_prunable = Fraction(0), 0
    for name, entry in layers.items():
        key = f"{name}.weight"
        if key in mask:
            reference += by_module[name] * Fraction(int(mask[key].sum()), mask[key].numel())
        else:
            non_prunable += by_module[name]
    assert result["non_prunable"] == non_prunable
    assert result["effective_exact"] == non_prunable + reference  # exact, no rounding
    assert result["dense"] == sum(by_module[name] for name in layers)
    assert result["prunable_dense"] + result["non_prunable"] == result["dense"]
    assert 0 < result["effective"] < result["dense"]
    assert all(layers[k[: -len(".weight")]]["pruned"] for k in mask)


def test_density_from_actual_zeros(tiny_model: nn.Module) -> None:
    mask = _hand_mask(tiny_model)
    zeroed = build_model("maskrcnn", "tiny", num_classes=3, min_size=64, max_size=64)
    zeroed.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        for name, param in zeroed.named_parameters():
            if name in mask:
                param.mul_(mask[name])
    result = count_macs(zeroed, 64)
    for name, entry in result["layers"].items():
        key = f"{name}.weight"
        expected = int(mask[key].sum()) if key in mask else entry["weights"]
        assert entry["kept"] == expected, name
        assert entry["pruned"] == (expected < entry["weights"])
    summary = macs_summary(result)
    assert "effective_exact" not in summary and summary["effective"] == result["effective"]


def test_layer_formulas_by_hand() -> None:
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    x = torch.zeros(1, 4, 8, 8)
    assert layer_call_macs(conv, x, conv(x)) == (6 * 4 * 4) * (4 // 2) * 9
    deconv = nn.ConvTranspose2d(4, 6, 2, stride=2)
    assert layer_call_macs(deconv, x, deconv(x)) == (4 * 8 * 8) * 6 * 4
    linear = nn.Linear(5, 7)
    y = torch.zeros(2, 3, 5)
    assert layer_call_macs(linear, y, linear(y)) == 2 * 3 * 5 * 7


@pytest.mark.slow  # a subprocess or an end-to-end run
def test_dense_macs_match_fvcore_on_r50_maskrcnn() -> None:
    """R-50 FPN Mask R-CNN, 256 x 256, heads at capacity: conv / linear / deconv MACs vs fvcore.

    fvcore also counts batch_norm, upsample and (not) roi_align; only its "conv" (which holds
    the transposed conv too) and "linear" operators are MACs of the layers counted here.
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = build_model("maskrcnn", "resnet50", num_classes=91, min_size=256, max_size=256).eval()
    result = count_macs(model, 256)
    by_module, by_operator = _fvcore(model, 256)
    mismatched = {name: (entry["dense"], by_module.get(name))
                  for name, entry in result["layers"].items() if by_module.get(name) != entry["dense"]}
    assert not mismatched, f"layers where count_macs and fvcore differ: {mismatched}"
    fv_total = by_operator["conv"] + by_operator["linear"]
    assert abs(result["dense"] - fv_total) <= 0.01 * fv_total
    assert by_operator["conv"] == result["by_type"]["conv"] + result["by_type"]["deconv"]
    # heads ran at capacity: the mask head saw detections_per_img RoIs
    assert result["layers"]["roi_heads.mask_predictor.conv5_mask"]["dense"] == 100 * 256 * 14 * 14 * 256 * 4
