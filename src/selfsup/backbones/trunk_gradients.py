"""What each reader of a shared trunk sends back into it: measured, and optionally balanced.

In multi-task training several heads read one trunk and their losses are summed, so the
trunk's gradient is the sum of the tasks' gradients. Their scales differ by an order of
magnitude (colorization's soft cross-entropy starts near log 261 = 5.6, a triplet loss near
0.5), so one task can drown the others. A `TrunkReader` is one task's view of the trunk: in
forward it hands the trunk's maps over unchanged; in backward it receives everything that
task sends into the trunk (over every map it read in that forward, e.g. all units of a lasso
stage) and records the L2 norm of it,

    n_t = || dL / d(maps read by task t) ||_2      (L: the summed loss, so w_t is included)

and with a target norm N > 0 rescales that gradient by N / n_t, so every task moves the
trunk by the same amount. The task's own parameters (its head, its row of alpha, its BN)
get the gradient of its loss unchanged: they sit above the reader.

fp16 training multiplies the loss, hence every gradient, by the GradScaler's scale S:
`TrunkGradients.scaled` marks the loss so that backward records S before it reaches any
reader, and norms and targets are in unscaled units. Everything stays on the device; the
norms are read when the loop logs. A task that reads the trunk twice in one step would have
each read measured and rescaled on its own (every built-in task reads it once).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from selfsup.backbones.base import Backbone


class TrunkGradients(nn.Module):
    """The per-reader gradient norms of the last backward, (readers,), and the loss scale."""

    def __init__(self, readers: int, target_norm: float = 0.0):
        super().__init__()
        self.target_norm = float(target_norm)
        # Not saved: measurements of the last step, rewritten by every backward.
        self.register_buffer("norms", torch.zeros(readers), persistent=False)
        self.register_buffer("loss_scale", torch.ones(()), persistent=False)

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """`loss` unchanged; its backward records the scale the loop multiplied it by."""
        return _RecordLossScale.apply(loss, self.loss_scale)


class _RecordLossScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss: torch.Tensor, store: torch.Tensor) -> torch.Tensor:
        ctx.store = store
        return loss.view_as(loss)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ctx.store.copy_(grad.detach().reshape(()))  # the root runs before any reader
        return grad, None


class _ReadTrunk(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gradients: TrunkGradients, index: int, *maps: torch.Tensor):
        ctx.gradients, ctx.index = gradients, index
        return tuple(fmap.view_as(fmap) for fmap in maps)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        gradients = ctx.gradients
        squares = sum(g.float().square().sum() for g in grads if g is not None)
        norm = torch.as_tensor(squares, device=gradients.norms.device).sqrt()
        norm = norm / gradients.loss_scale.abs().clamp_min(1e-30)
        gradients.norms[ctx.index] = norm.detach()
        if gradients.target_norm > 0:
            factor = gradients.target_norm / norm.clamp_min(1e-12)
            grads = tuple(None if g is None else g * factor.to(g.dtype) for g in grads)
        return (None, None, *grads)


class TrunkReader(Backbone):
    """Reader `index`'s view of `trunk`: the same layers and maps; backward measures (and with
    a target, rescales) what this reader sends into the trunk (see the module docstring)."""

    def __init__(self, trunk: Backbone, gradients: TrunkGradients, index: int):
        super().__init__()
        self.trunk, self.gradients, self.index = trunk, gradients, index
        self._names = list(trunk.layer_names)
        self.aliases = dict(trunk.aliases)
        self.layer_channels = dict(trunk.layer_channels)
        self._probe_layers = trunk.probe_layers
        self.min_input_size = trunk.min_input_size
        if hasattr(trunk, "unit_names"):  # a ResNet: a lasso may combine its units
            self.unit_names = trunk.unit_names
            self.num_stages = trunk.num_stages

    def read(self, maps: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return _ReadTrunk.apply(self.gradients, self.index, *maps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read([self.trunk(x)])[0]

    def forward_layers(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        maps = self.trunk.forward_layers(x, layers)
        return dict(zip(maps, self.read(list(maps.values()))))
