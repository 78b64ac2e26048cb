"""Quantization-aware training of a ticket with SparseML's `!QuantizationModifier`, zeros held.

What the deployment runs on DeepSparse (backbone + FPN + RPN head, box head, mask / keypoint head)
is quantized, the predictors' transposed convolutions included (made phase convs first,
`phase_conv`); what runs on ONNX Runtime or torch (the transform, anchors, RoI pooling, a
transposed conv that is not an exact upsampling) stays fp32 (`IGNORE`). Before QAT every BatchNorm is folded
into its convolution (`fold_batchnorms`: w * g / sqrt(v + eps), exact in fp32, so a pruned weight
stays exactly zero and the folded model equals the ticket in eval mode); the QAT graph then has
no BatchNorm to fold at export and the fake-quantized weights are the deployed ones.

SparseML 1.8 on torch 2.14: `QuantizationScheme.get_qconfig` sets an attribute on torch's
`QConfig`, which torch >= 2.6 declares with `__slots__ = ()` (AttributeError). `_patch_qconfig`
makes SparseML build a slot-free subclass instead; nothing else of SparseML's QAT path changes.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.ao.quantization import QConfig

from compress.quantize.phase_conv import Phasing, phase_deconvs, phase_mask

log = logging.getLogger(__name__)

# module class names / submodule names SparseML must not wrap: they do not take one tensor (the
# QuantWrapper forwards one), or they run outside DeepSparse in the deployment
IGNORE = ("GeneralizedRCNNTransform", "AnchorGenerator", "MultiScaleRoIAlign", "LastLevelMaxPool",
          "ConvTranspose2d")
_BN_NAMES = ("BatchNorm2d", "FrozenBatchNorm2d")


class _SchemeQConfig(QConfig):
    """torch's QConfig without `__slots__`: SparseML stores its scheme on it."""


def _patch_qconfig() -> None:
    from sparseml.pytorch.sparsification.quantization import quantization_scheme as qs

    if getattr(qs._get_qconfig, "_lth_patched", False):
        return
    original = qs._get_qconfig

    def get_qconfig(activation_args: Any, weight_args: Any) -> QConfig:
        return _SchemeQConfig(*original(activation_args, weight_args))

    get_qconfig._lth_patched = True  # type: ignore[attr-defined]
    qs._get_qconfig = get_qconfig


def _is_bn(module: nn.Module) -> bool:
    return type(module).__name__ in _BN_NAMES


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.Module) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    folded = (bias - bn.running_mean) * scale + bn.bias
    if conv.bias is None:
        conv.bias = nn.Parameter(folded)
    else:
        conv.bias.copy_(folded)


def fold_batchnorms(model: nn.Module) -> int:
    """Fold every BatchNorm that follows a conv (ResNet's `convN`/`bnN` pairs and the `downsample`
    Sequential) into it, in place, the BN replaced by Identity; returns how many were folded.
    The conv's weight Parameter is kept (scaled in place), so names and identities stay."""
    folded = 0
    for parent in list(model.modules()):
        children = dict(parent.named_children())
        for name, child in children.items():
            if not _is_bn(child):
                continue
            conv = None
            if name.startswith("bn") and isinstance(children.get("conv" + name[2:]), nn.Conv2d):
                conv = children["conv" + name[2:]]
            elif isinstance(parent, nn.Sequential) and name.isdigit() and int(name) > 0:
                before = children.get(str(int(name) - 1))
                conv = before if isinstance(before, nn.Conv2d) else None
            if conv is None:
                raise ValueError(f"a {type(child).__name__} ({name}) that follows no conv cannot "
                                 "be folded for quantization")
            _fold(conv, child)
            setattr(parent, name, nn.Identity())
            folded += 1
    return folded


def quantization_recipe(observer_epoch: float | None) -> str:
    """The SparseML recipe of the quantization phase: QAT from the start in DeepSparse's scheme
    (uint8 asymmetric activations, int8 symmetric weights: a pruned weight quantizes to exactly
    0), observers frozen at `observer_epoch` (None: never)."""
    lines = ["modifiers:", "  - !QuantizationModifier", "    start_epoch: 0.0",
             "    scheme: deepsparse", f"    ignore: {list(IGNORE)}", "    strict: false",
             "    model_fuse_fn_name: no_fuse"]
    if observer_epoch is not None:
        lines.append(f"    disable_quantization_observer_epoch: {observer_epoch:.6g}")
    return "\n".join(lines) + "\n"


def quantization_manager(recipe_text: str) -> Any:
    """A SparseML manager over the quantization recipe (the QConfig shim applied first)."""
    _patch_qconfig()
    from sparseml.pytorch.optim import ScheduledModifierManager

    return ScheduledModifierManager.from_yaml(recipe_text)


@dataclass(frozen=True)
class QatLayout:
    """Where the ticket's parameters went in the fake-quantized model: {old name: new name}
    (SparseML's wrappers nest each quantized layer: `conv1.weight` -> `conv1.module.weight`) and
    the transposed convs made phase convs (`phase_conv`), whose masks change shape."""
    names: dict[str, str]
    phased: dict[str, Phasing]

    def mask(self, mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The ticket's keep masks by the quantized model's parameter names."""
        missing = [n for n in mask if n not in self.names]
        if missing:
            raise ValueError(f"mask entry {missing[0]} has no parameter in the quantized model")
        return {self.names[n]: phase_mask(m, self.phased[n]) if n in self.phased else m
                for n, m in mask.items()}


def prepare_qat(model: nn.Module, manager: Any, loggers: Any = None) -> QatLayout:
    """Fold the BatchNorms, make the transposed convs phase convs, apply the manager's structure
    (fake-quant wrappers) in place. The other Parameter objects are kept."""
    before = {id(p): n for n, p in model.named_parameters()}
    fold_batchnorms(model)
    phased = phase_deconvs(model)
    phase_weights = {id(model.get_parameter(n.removesuffix(".weight") + ".conv.weight")): n
                     for n in phased}
    manager.apply_structure(model, epoch=0.0, loggers=loggers)
    after = {id(p): n for n, p in model.named_parameters()}
    names = {name: after[key] for key, name in before.items() if key in after}
    names.update({old: after[key] for key, old in phase_weights.items()})
    return QatLayout(names=names, phased=phased)


def quantized_layers(model: nn.Module) -> list[str]:
    """Names of the modules whose weights are fake-quantized."""
    return [name for name, module in model.named_modules() if hasattr(module, "weight_fake_quant")]


def quantized_params(model: nn.Module) -> set[str]:
    """Parameter names of the fake-quantized weights."""
    return {f"{layer}.weight" for layer in quantized_layers(model)}


def freeze(model: nn.Module) -> nn.Module:
    """Observers off (scales fixed), fake quantization on: the model as it is deployed."""
    model.apply(torch.ao.quantization.disable_observer)
    model.apply(torch.ao.quantization.enable_fake_quant)
    return model


@torch.no_grad()
def calibrated(model: nn.Module, images: list[torch.Tensor], loggers: Any = None) -> nn.Module:
    """A post-training INT8 copy of `model` for latency only: BatchNorms folded, SparseML's
    fake-quant wrappers, observers run once over `images` (eval mode), then frozen. What QAT
    would train changes the values, not the graph or its speed."""
    model = copy.deepcopy(model).eval()
    prepare_qat(model, quantization_manager(quantization_recipe(None)), loggers=loggers)
    model.eval()
    for image in images:
        model([image])
    return freeze(model)
