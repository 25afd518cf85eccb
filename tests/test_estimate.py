"""`selfsup config NAME --estimate`: what a training step of a config costs, per item."""

import torch
from torch import nn

from selfsup.cli import main
from selfsup.config import parse_overrides, resolve
from selfsup.estimate import estimate
from selfsup.runs import backbone_from_config
from selfsup.tasks import task_config_class

# Rotation: four rotated copies of each image, at the image's own size, go through the trunk.
TINY = ["task=rotation", "backbone.name=alexnet_small"]


def config(*extra: str):
    return resolve(parse_overrides([*TINY, *extra]), task_config_class)


def hand_counted_flops(model: nn.Module, size: int) -> int:
    """2 x multiply-adds of every convolution and linear layer of one forward pass, from the
    layers' own shapes: 2 Cin/groups Cout kh kw Hout Wout, and 2 in out."""
    total = 0

    def count(module, _, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = 2 * module.in_channels // module.groups * kh * kw
            total += per_output * output.numel()
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    return total


def test_the_trunk_flops_match_a_count_by_hand_and_the_parameters_add_up():
    cfg = config("data.image_size=32")
    found = estimate(cfg)
    torch.manual_seed(cfg.train.seed)
    trunk = backbone_from_config(cfg.backbone)
    assert found.trunk_forward_flops == hand_counted_flops(trunk, 32)
    assert found.trunk_parameters == sum(p.numel() for p in trunk.parameters())
    # The step runs the trunk on 4 copies, and backward costs about twice the forward.
    assert 8 * found.trunk_forward_flops < found.training_flops < 16 * found.trunk_forward_flops


def test_costs_per_item_grow_with_the_pixels():
    """A conv net's FLOPs and activations scale with the image area: 4x from 32 to 64 px."""
    small, large = estimate(config("data.image_size=32")), estimate(config("data.image_size=64"))
    assert 3.0 < large.trunk_forward_flops / small.trunk_forward_flops < 4.5
    assert 3.0 < large.activation_bytes / small.activation_bytes < 4.5
    assert large.trunk_parameters == small.trunk_parameters


def test_config_takes_a_preset_with_overrides_and_estimates_it(capsys):
    assert main(["config", "counting_small", "optim.lr=0.5"]) == 0
    assert "lr: 0.5" in capsys.readouterr().out
    assert main(["config", "counting_small", "--estimate", "data.batch_size=8"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "parameters:" in out and "FLOPs per batch item at 32 px" in out
    assert "a step of 8 items" in out
