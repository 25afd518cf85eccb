"""Backbones: every registered architecture is checked through the common interface."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import selfsup.backbones as backbones
from selfsup.backbones import Backbone, ResNetV2, build_backbone, list_backbones
from selfsup.backbones.resnet_v2 import scaled

# Small, fast settings per registered name: (build kwargs, input size). A backbone registered
# without an entry here is still tested, with default kwargs at 64 px.
SMALL: dict[str, tuple[dict, int]] = {
    "alexnet": ({}, 114),
    "alexnet_small": ({}, 32),
    "resnet18": ({"stem": "small", "width": 0.25}, 32),
    "resnet34": ({"stem": "small", "width": 0.25}, 32),
    "resnet50": ({"stem": "small", "width": 0.25}, 32),
    "resnet101": ({"stem": "small", "width": 0.125}, 32),
    "vgg16": ({"width": 0.125}, 32),
}


@pytest.fixture(autouse=True)
def _one_thread():
    # These nets are tiny: one thread is as fast, and with two OpenMP threads a CPU busy with
    # other work makes every op spin-wait (measured: 0.04 s -> 12 s per resnet101 step).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def small(name: str) -> tuple[Backbone, torch.Tensor]:
    kwargs, size = SMALL.get(name, ({}, 64))
    torch.manual_seed(0)
    return build_backbone(name, **kwargs), torch.randn(2, 3, size, size)


def first_conv(net: nn.Module) -> nn.Conv2d:
    return next(m for m in net.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture(params=list_backbones())
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_forward_backward(name: str) -> None:
    net, x = small(name)
    out = net(x)
    assert out.shape[:2] == (2, net.num_features)
    assert net.num_features == net.layer_channels[net.layer_names[-1]]
    out.square().mean().backward()
    grad = first_conv(net).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_forward_layers_keys_channels_and_consistency(name: str) -> None:
    net, x = small(name)
    net.eval()
    names = [*net.layer_names, *net.aliases]
    with torch.no_grad():
        full = net.forward_layers(x, names)
        final = net(x)
        early = net.forward_layers(x, [names[0]])
    assert list(full) == names
    for layer, fmap in full.items():
        assert fmap.shape[:2] == (2, net.layer_channels[layer]), layer
        assert torch.isfinite(fmap).all(), layer
    assert list(early) == [names[0]]
    assert list(net.forward_layers(x, names[::-1])) == names[::-1]  # keys in requested order
    assert net.forward_layers(x, []) == {}
    torch.testing.assert_close(early[names[0]], full[names[0]])
    torch.testing.assert_close(final, full[net.layer_names[-1]])
    for alias, target in net.aliases.items():
        assert torch.equal(full[alias], full[target])
    shapes = net.feature_shapes(x.shape[-1])
    assert shapes == {k: tuple(v.shape[1:]) for k, v in full.items()}
    assert not net.training  # feature_shapes restores the mode it found


def test_forward_layers_stops_after_last_requested(name: str) -> None:
    net, x = small(name)
    ran: list[str] = []
    for layer, stage in zip(net.layer_names, net.stages.values()):
        stage.register_forward_hook(lambda *_, layer=layer: ran.append(layer))
    first = net.layer_names[0]
    assert set(net.forward_layers(x, [first, first])) == {first}
    assert ran == [first]


def test_unknown_layer(name: str) -> None:
    net, x = small(name)
    with pytest.raises(ValueError, match="no_such_layer") as info:
        net.forward_layers(x, [net.layer_names[0], "no_such_layer"])
    assert net.layer_names[-1] in str(info.value)  # lists the valid names
    with pytest.raises(TypeError):
        net.forward_layers(x, net.layer_names[0])  # type: ignore[arg-type]


def test_bfloat16_autocast_and_channels_last(name: str) -> None:
    net, x = small(name)
    net.eval()
    with torch.no_grad():
        reference = net(x)
        out = net(x.contiguous(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x.contiguous(memory_format=torch.channels_last))
    # Deep pre-activation nets at init have large activations; compare relative to their scale.
    scale = reference.abs().max().item()
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5 * scale)
    assert low.shape == reference.shape and torch.isfinite(low.float()).all()


def test_alexnet_sizes() -> None:
    net = build_backbone("alexnet")
    assert net.feature_shapes(114)["pool5"] == (256, 3, 3)
    assert net.feature_shapes(224)["pool5"] == (256, 6, 6)
    assert net.feature_shapes(64)["pool5"] == (256, 1, 1)
    shapes = net.feature_shapes(114)
    assert [shapes[f"conv{i}"][1] for i in range(1, 6)] == [26, 13, 6, 6, 6]
    assert net.layer_names == ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5")
    with pytest.raises(ValueError, match="at least"):
        net(torch.zeros(1, 3, 32, 32))


def test_alexnet_small_sizes() -> None:
    net = build_backbone("alexnet_small")
    assert net.feature_shapes(16)["pool5"] == (256, 2, 2)
    assert net.feature_shapes(32)["pool5"] == (256, 4, 4)
    assert net.feature_shapes(8)["pool5"] == (256, 1, 1)


@pytest.mark.parametrize("arch", ["alexnet", "alexnet_small"])
def test_alexnet_batch_norm_flag(arch: str) -> None:
    with_bn = build_backbone(arch)
    without = build_backbone(arch, batch_norm=False)
    assert any(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    assert all(m.bias is not None for m in without.modules() if isinstance(m, nn.Conv2d))
    assert all(m.bias is None for m in with_bn.modules() if isinstance(m, nn.Conv2d))
    # Layer outputs are post-ReLU, as a linear probe expects.
    maps = without.eval().forward_layers(torch.randn(1, 3, 64, 64), ["conv1", "conv5"])
    assert all((fmap >= 0).all() for fmap in maps.values())


def test_vgg16_layers_probe_points_and_the_papers_input() -> None:
    net = build_backbone("vgg16", width=0.125)
    names = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7")
    assert net.layer_names == names
    assert net.probe_layers == ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
    assert net.vector_layers == ("fc6", "fc7") and net.final_is_vector
    shapes = net.feature_shapes(227)  # the paper's patches: pool5 is 7x7, as at 224
    assert [shapes[f"conv{i}"][1] for i in range(1, 6)] == [227, 113, 56, 28, 14]
    assert shapes["pool5"] == (64, 7, 7) and shapes["fc7"] == (512, 1, 1)
    assert net.feature_shapes(32)["pool5"] == (64, 1, 1)  # fc6 still reads 7x7 (pooled)
    with pytest.raises(ValueError, match="at least"):
        net(torch.zeros(1, 3, 16, 16))
    assert not build_backbone("alexnet").final_is_vector


def test_vgg16_has_the_weights_of_vgg16() -> None:
    """Every conv and fc6/fc7 shaped as torchvision's VGG16 (with batch norm); its fc8
    classifier is what a task's head replaces. Built on the meta device: the shapes without
    drawing 138M initial weights three times."""
    with torch.device("meta"):
        ours = build_backbone("vgg16")
        theirs = torchvision.models.vgg16_bn()
        plain = build_backbone("vgg16", batch_norm=False)

    def shapes(net: nn.Module, kinds: tuple) -> list[tuple]:
        return [tuple(m.weight.shape) for m in net.modules() if isinstance(m, kinds)]

    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)
    assert shapes(ours, kinds) == shapes(theirs, kinds)[:-1]
    assert ours.layer_channels["fc7"] == 4096 and ours.layer_channels["conv5"] == 512
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


def test_resnet_layer_names() -> None:
    net = build_backbone("resnet50", width=0.25, stem="small")
    assert isinstance(net, ResNetV2)
    units = [u for s in range(1, 5) for u in net.unit_names(s)]
    assert [len(net.unit_names(s)) for s in range(1, 5)] == [3, 4, 6, 3]
    assert net.layer_names == ("stem", *units, "final")
    assert net.stage_names == ("stem", "layer1", "layer2", "layer3", "layer4", "final")
    assert net.aliases["layer3"] == "layer3.5"
    assert net.layer_channels["layer3"] == 64 * 4
    with pytest.raises(ValueError, match="stage 5"):
        net.unit_names(5)


def test_resnet101_multitask_trunk() -> None:
    net = build_backbone("resnet101", num_stages=3)  # width 1.0; built, never run
    assert len(net.unit_names(3)) == 23
    assert sum(len(net.unit_names(s)) for s in (1, 2, 3)) == 30
    assert net.num_features == 1024
    assert net.layer_names[-2] == "layer3.22"
    assert "layer4" not in net.layer_channels


@pytest.mark.parametrize(
    ("arch", "reference"), [("resnet18", "resnet18"), ("resnet50", "resnet50")]
)
def test_resnet_conv_shapes_match_torchvision(arch: str, reference: str) -> None:
    # Pre-activation moves BN/ReLU but keeps every conv of the original architecture.
    ours = sorted(
        tuple(m.weight.shape) for m in build_backbone(arch).modules() if isinstance(m, nn.Conv2d)
    )
    theirs = sorted(
        tuple(m.weight.shape)
        for m in getattr(torchvision.models, reference)().modules()
        if isinstance(m, nn.Conv2d)
    )
    assert ours == theirs


@pytest.mark.parametrize("stem,size,final", [("imagenet", 224, 7), ("small", 32, 4)])
def test_resnet_stems(stem: str, size: int, final: int) -> None:
    net = build_backbone("resnet18", width=0.125, stem=stem)
    assert net.feature_shapes(size)["final"] == (64, final, final)


def test_resnet_width_rounding() -> None:
    assert [scaled(64, w) for w in (1.0, 0.5, 0.25, 0.1, 0.01)] == [64, 32, 16, 8, 8]
    assert scaled(512, 0.3) == 152  # 153.6 -> nearest multiple of 8
    net = build_backbone("resnet34", width=0.1, num_stages=2)
    assert [net.layer_channels[s] for s in net.stage_names] == [8, 8, 16, 16]


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_preactivation_unit_with_zero_residual_is_identity(arch: str) -> None:
    net = build_backbone(arch, width=0.25, stem="small")
    unit = net.unit("layer2.1")  # not the first unit of its stage: identity shortcut
    assert unit.shortcut is None
    nn.init.zeros_(unit.residual[-1].weight)
    x = torch.randn(2, net.layer_channels["layer2.0"], 8, 8)
    for mode in (True, False):  # BN statistics must not matter either way
        unit.train(mode)
        torch.testing.assert_close(unit(x), x, rtol=0, atol=0)
    # The projection shortcut reads the pre-activated input.
    first = net.unit("layer2.0")
    assert first.shortcut is not None


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="resnet9") as info:
        build_backbone("resnet9")
    assert "alexnet" in str(info.value)
    with pytest.raises(ValueError, match="width"):
        build_backbone("alexnet", width=2.0)
    with pytest.raises(ValueError, match="stem"):
        build_backbone("resnet18", stem="tiny")
    with pytest.raises(ValueError, match="num_stages"):
        build_backbone("resnet18", num_stages=5)
    with pytest.raises(ValueError, match="width"):
        build_backbone("resnet18", width=0)
    with pytest.raises(ValueError, match="batch_norm"):
        build_backbone("alexnet_small", batch_norm="yes")
    with pytest.raises(ValueError, match="already registered"):
        backbones.register_backbone("alexnet")(backbones.AlexNet)


def test_register_custom_backbone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backbones, "_REGISTRY", dict(backbones._REGISTRY))

    class Tiny(Backbone):
        def __init__(self, channels: int = 4) -> None:
            super().__init__()
            self.add_stage("conv", nn.Conv2d(3, channels, 3, padding=1), channels)
            self.add_stage("relu", nn.ReLU(), channels)

    backbones.register_backbone("tiny")(Tiny)
    assert "tiny" in list_backbones()
    assert backbones.backbone_kwargs("tiny") == {"channels": 4}
    net = build_backbone("tiny", channels=6)
    assert net(torch.zeros(1, 3, 5, 5)).shape == (1, 6, 5, 5)
    with pytest.raises(ValueError, match="depth"):
        build_backbone("tiny", depth=3)
