"""torchvision interop: AlexNet weights move both ways; mismatched architectures are refused
with the reason (no downloads: torchvision models are built with weights=None)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from selfsup.backbones import build_backbone
from selfsup.backbones.torchvision_io import (
    TorchvisionMismatchError,
    load_torchvision_state,
    torchvision_state,
)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # small nets on a shared CPU: more threads only spin-wait
    yield
    torch.set_num_threads(previous)


def test_alexnet_round_trip_gives_torchvision_outputs():
    torch.manual_seed(0)
    theirs = torchvision.models.alexnet(weights=None).eval()
    ours = build_backbone("alexnet_torchvision").eval()
    load_torchvision_state(ours, theirs.state_dict())  # classifier entries are ignored
    # 127 px: an odd size where floor and ceil pooling would give different maps.
    x = torch.randn(2, 3, 127, 127)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs.features(x), atol=1e-5)
        back = torchvision.models.alexnet(weights=None).eval()
        result = back.load_state_dict(torchvision_state(ours), strict=False)
        assert not result.unexpected_keys
        assert all(key.startswith("classifier.") for key in result.missing_keys)
        assert torch.allclose(back.features(x), theirs.features(x))


@pytest.mark.parametrize(
    ("name", "kwargs", "reason"),
    [
        ("resnet18", {"stem": "small", "width": 0.25}, "pre-activation"),
        ("alexnet", {}, "differ from torchvision"),
        ("alexnet_small", {}, "differ from torchvision"),
        ("alexnet_torchvision", {"batch_norm": True}, "batch norm"),
    ],
)
def test_architectures_without_a_torchvision_twin_are_refused(name, kwargs, reason):
    with pytest.raises(TorchvisionMismatchError, match=reason):
        torchvision_state(build_backbone(name, **kwargs))


def test_a_state_dict_of_another_model_is_refused_by_name():
    ours = build_backbone("alexnet_torchvision")
    with pytest.raises(TorchvisionMismatchError, match=r"features\.0\.weight"):
        load_torchvision_state(ours, {"conv1.weight": torch.zeros(1)})
