"""What a training config costs, before a GPU is booked: `selfsup config NAME --estimate`.

One forward and backward pass of the config's own task and backbone on random inputs of
the configured size (a batch of two, on the CPU) gives, per batch item (an image; for
transitive invariance, a pair of patches):

- parameters, of the trunk and of the rest (heads, lasso weights);
- FLOPs of the trunk's forward pass and of the whole training step (forward and backward,
  matrix products and convolutions as torch.utils.flop_counter counts them);
- activation memory: the bytes of the tensors autograd keeps for the backward pass, in fp32.

Figures per item scale with the batch (data.batch_size; transitive.pairs_per_batch); the
optimizer's state (SGD momentum: one more copy of the parameters, AdamW: two) and the data
cache come on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from selfsup.config import ExperimentConfig
from selfsup.data.streams import GraphPairs, synthetic_fields
from selfsup.train import build_model, view_generator

BATCH = 2  # batch norm needs two samples in training mode; figures are divided by it


@dataclass
class Estimate:
    trunk_parameters: int
    other_parameters: int
    trunk_forward_flops: float  # per image
    training_flops: float  # per image: forward and backward of the whole task
    activation_bytes: float  # per image, fp32
    image_size: int
    batch_size: int  # items per step and process

    def lines(self) -> list[str]:
        batch = self.batch_size
        return [
            f"parameters: {self.trunk_parameters / 1e6:.2f} M in the trunk, "
            f"{self.other_parameters / 1e6:.2f} M in heads and the rest",
            f"FLOPs per batch item at {self.image_size} px: trunk forward (one image) "
            f"{self.trunk_forward_flops / 1e9:.3g} G, training step (forward + backward) "
            f"{self.training_flops / 1e9:.3g} G",
            f"activation memory per batch item: {self.activation_bytes / 2**20:.1f} MiB "
            "(kept for backward, fp32)",
            f"a step of {batch} items: {self.training_flops * batch / 1e12:.3g} TFLOP, "
            f"{self.activation_bytes * batch / 2**30:.2f} GiB of activations "
            "(plus weights, gradients and optimizer state)",
        ]


def saved_bytes(step, parameters) -> float:
    """Bytes of the distinct tensors autograd saves for backward while `step()` runs, other
    than `parameters` (weights are saved too, but they are not activations)."""
    weights = {p.untyped_storage().data_ptr() for p in parameters}
    seen: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        step()
    return float(sum(seen.values()))


def estimate(cfg: ExperimentConfig) -> Estimate:
    """The costs of training `cfg` (see the module docstring), measured on the CPU."""
    model = build_model(cfg, load_init=False).train()
    size = max(cfg.data.image_size, model.min_image_size())
    generator = torch.Generator().manual_seed(0)
    fields = synthetic_fields(model.inputs(), BATCH, size, generator)
    views = model.make_views(**fields, generator=view_generator(0, 0, 0))
    trunk = sum(p.numel() for p in model.backbone.parameters())
    total = sum(p.numel() for p in model.parameters())
    losses: list[torch.Tensor] = []
    with FlopCounterMode(display=False) as forward_counter:
        activations = saved_bytes(
            lambda: losses.append(model(views)["loss"]), list(model.parameters())
        )
    with FlopCounterMode(display=False) as backward_counter:
        losses[0].backward()
    with torch.no_grad(), FlopCounterMode(display=False) as trunk_counter:
        model.backbone(torch.zeros(BATCH, 3, size, size))
    training = forward_counter.get_total_flops() + backward_counter.get_total_flops()
    return Estimate(
        trunk_parameters=trunk,
        other_parameters=total - trunk,
        trunk_forward_flops=trunk_counter.get_total_flops() / BATCH,
        training_flops=training / BATCH,
        activation_bytes=activations / BATCH,
        image_size=size,
        batch_size=next(
            (w.pairs_per_batch for w in model.inputs() if isinstance(w, GraphPairs)),
            cfg.data.batch_size,
        ),
    )
