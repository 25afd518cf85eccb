"""A Conv2d that runs in whichever memory layout is faster on the CPU for its shape.

channels_last is the faster layout for almost every convolution of these networks on the CPU
(oneDNN's brgemm kernels), but not for wide 3x3 convolutions on tiny maps: on a map of at
most 4x4 with 192 or more input channels, the planar (NCHW) kernels are 14-68 % faster over
forward and backward together (fp32, batch 128-512; `bench/perf.py` reports the end-to-end
effect). Those are the last stage of a ResNet on 32 px inputs and conv3-5 of the counting
AlexNet. `LayoutConv2d` converts just such a call's input to NCHW and its output back to
channels_last, so the rest of the network keeps channels_last; the result is the same
convolution up to float summation order.
"""

from __future__ import annotations

import torch
from torch import nn

# Where planar beat channels_last in the measurements above; 128 channels at 4x4, 3x3 maps of
# 6x6 and up, 1x1 kernels and strided convs were the same or slower in planar.
PLANAR_MAX_MAP_PIXELS = 16
PLANAR_MIN_IN_CHANNELS = 192


def planar_is_faster(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether `conv` on the channels_last input `x` runs faster in NCHW (see module doc).

    Only fp32 on the CPU was measured, so any other device, dtype or an active CPU autocast
    keeps the layout it is given.
    """
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and x.dim() == 4
        and x.shape[-2] * x.shape[-1] <= PLANAR_MAX_MAP_PIXELS
        and conv.in_channels >= PLANAR_MIN_IN_CHANNELS
        and conv.groups == 1
        and conv.kernel_size != (1, 1)
        and conv.stride == (1, 1)
        and x.is_contiguous(memory_format=torch.channels_last)
        and not x.is_contiguous()  # both at once: a 1x1 map, with no layout to choose
    )


class LayoutConv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters and state dict) that runs the call in NCHW when
    `planar_is_faster` says so, returning a channels_last output either way."""

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if not planar_is_faster(input, self):
            return super()._conv_forward(input, weight, bias)
        return self._planar_conv_forward(input, weight, bias)

    # Run eagerly under torch.compile: inductor would otherwise drop the layout copies and
    # hand the convolution channels_last operands again.
    @torch.compiler.disable
    def _planar_conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        # Both operands must be planar: a channels_last weight alone makes torch pick the
        # channels_last kernel again.
        out = super()._conv_forward(input.contiguous(), weight.contiguous(), bias)
        return out.contiguous(memory_format=torch.channels_last)
