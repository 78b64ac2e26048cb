"""Transposed convolutions as phase convolutions in torch, so the quantization phase can quantize
them.

The deployment already rewrites each exactly-upsampling ConvTranspose (Mask R-CNN's `conv5_mask`,
2x2 stride 2; Keypoint R-CNN's `kps_score_lowres`, 4x4 stride 2 padding 1) as a stride-1 Conv and a
DepthToSpace (`compress.export.deploy.deconv`), because DeepSparse has no fast ConvTranspose kernel. On the
fp32 graph that happens in ONNX; a QDQ graph would keep that Conv fp32, the one fp32 conv inside
an INT8 head. Done in torch before QAT instead (`phase_deconvs`), the phase conv is an ordinary
`nn.Conv2d` that SparseML fake-quantizes and trains like every other layer, and it exports as
Conv + DepthToSpace with its weight Q/DQ, which DeepSparse runs as an integer conv.

The rewrite is exact: `phase_kernel` puts every weight on exactly one tap, so the module equals
the transposed convolution (up to summation order) and its mask (`phase_mask`) keeps the same
zeros, plus the taps no weight lands on, held at zero so they stay structural. The bias is
repeated per phase.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compress.export.deploy.deconv import phase_kernel


@dataclass(frozen=True)
class Phasing:
    """How a ConvTranspose2d became a phase conv: upsampling stride and padding."""
    stride: int
    pad: int


class PhaseConvTranspose2d(nn.Module):
    """ConvTranspose2d(kernel s + 2p, stride s, padding p) as pad -> Conv2d -> PixelShuffle(s)
    (PixelShuffle is DepthToSpace in CRD order)."""

    def __init__(self, deconv: nn.ConvTranspose2d, phasing: Phasing) -> None:
        super().__init__()
        weight, (before, after) = phase_kernel(deconv.weight.detach().cpu().numpy(),
                                               phasing.stride, phasing.pad)
        self.stride = phasing.stride
        self.pads = (before, after, before, after)
        symmetric = before == after
        self.conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[2:],
                              padding=before if symmetric else 0, bias=deconv.bias is not None)
        self.pre_pad = not symmetric
        with torch.no_grad():
            self.conv.weight.copy_(torch.from_numpy(weight))
            if deconv.bias is not None:
                self.conv.bias.copy_(deconv.bias.detach().repeat_interleave(self.stride ** 2))
        self.to(deconv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_pad:
            x = F.pad(x, self.pads)
        return F.pixel_shuffle(self.conv(x), self.stride)


def phasing_of(module: nn.Module) -> Phasing | None:
    """The phasing when `module` is a 2-D ConvTranspose whose output is exactly `stride` times its
    input (square kernel = stride + 2 * padding, no groups, dilation or output padding)."""
    if type(module) is not nn.ConvTranspose2d:
        return None
    (sh, sw), (ph, pw), (kh, kw) = module.stride, module.padding, module.kernel_size
    plain = (module.groups == 1 and tuple(module.dilation) == (1, 1)
             and tuple(module.output_padding) == (0, 0) and module.padding_mode == "zeros")
    if not plain or sh != sw or ph != pw or kh != kw or kh != sh + 2 * ph:
        return None
    return Phasing(stride=sh, pad=ph)


def phase_deconvs(model: nn.Module) -> dict[str, Phasing]:
    """Replace every rewritable ConvTranspose2d of `model` in place by a PhaseConvTranspose2d;
    {the transposed conv's weight name: its phasing}. The phase conv's weight is
    `<module>.conv.weight`."""
    done = {}
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            phasing = phasing_of(child)
            if phasing is None:
                continue
            setattr(parent, name, PhaseConvTranspose2d(child, phasing))
            done[f"{parent_name}.{name}.weight" if parent_name else f"{name}.weight"] = phasing
    return done


def phase_mask(mask: torch.Tensor, phasing: Phasing) -> torch.Tensor:
    """A transposed conv's keep mask (C x O x k x k) as its phase conv's: the same kept weights at
    their taps, every other tap pruned."""
    keep = phase_kernel(mask.detach().cpu().to(torch.float32).numpy(), phasing.stride,
                        phasing.pad)[0]
    return torch.from_numpy(keep != 0).to(mask.dtype)
