"""Backbones with a uniform interface (see `base.Backbone`), built by name from a registry.

    net = build_backbone("resnet50", stem="small", width=0.5)
    maps = net.forward_layers(images, ["layer2", "final"])  # images: (B, 3, H, W)

Registered: alexnet, alexnet_small, alexnet_torchvision (kwarg batch_norm),
resnet18/34/50/101 (kwargs width, stem, num_stages) and vgg16 (kwargs width, batch_norm,
dropout); besides them any timm model as `timm:<model>` (`timm_models.py`; needs timm, no
kwargs). Unknown names, unknown keyword arguments
and invalid values all raise ValueError naming the culprit, so a config typo fails at build time.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TypeVar

from selfsup.backbones import alexnet as _alexnet
from selfsup.backbones import resnet_v2 as _resnet
from selfsup.backbones import timm_models as _timm
from selfsup.backbones import vgg as _vgg
from selfsup.backbones.alexnet import AlexNet
from selfsup.backbones.base import Backbone
from selfsup.backbones.resnet_v2 import ResNetV2
from selfsup.backbones.vgg import VGG

Factory = TypeVar("Factory", bound=Callable[..., Backbone])

_REGISTRY: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str) -> Callable[[Factory], Factory]:
    """Decorator: make a factory `(**kwargs) -> Backbone` buildable as `name`.

    The factory's keyword parameters are the arguments `build_backbone` accepts for it.
    Registering a name twice raises ValueError (silently replacing an architecture would make
    old configs build something else).
    """

    def add(factory: Factory) -> Factory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return add


def list_backbones() -> list[str]:
    """Registered backbone names, sorted.

    >>> import selfsup
    >>> {"alexnet", "resnet18", "vgg16"} <= set(selfsup.list_backbones())
    True
    """
    return sorted(_REGISTRY)


def backbone_kwargs(name: str) -> dict[str, object]:
    """The keyword arguments backbone `name` accepts, with their defaults."""
    factory = _factory(name)
    return {
        p.name: p.default
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def build_backbone(name: str, **kwargs: object) -> Backbone:
    """A freshly initialised backbone `name` built with `kwargs`.

    Raises ValueError for an unknown name (listing the registered ones), an argument the
    backbone does not take (listing the ones it does), or an invalid argument value.

    >>> import selfsup, torch
    >>> backbone = selfsup.build_backbone("resnet18", stem="small")
    >>> backbone(torch.randn(2, 3, 32, 32)).shape  # the final feature map
    torch.Size([2, 512, 4, 4])
    >>> maps = backbone.forward_layers(torch.randn(2, 3, 32, 32), ["layer1", "layer2"])
    >>> {name: tuple(m.shape) for name, m in maps.items()}
    {'layer1': (2, 64, 32, 32), 'layer2': (2, 128, 16, 16)}
    """
    factory = _factory(name)
    params = inspect.signature(factory).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = backbone_kwargs(name)
        unknown = [key for key in kwargs if key not in accepted]
        if unknown:
            raise ValueError(
                f"backbone {name!r} takes no argument(s) {', '.join(unknown)}; "
                f"it takes: {', '.join(accepted) or 'none'}"
            )
    backbone = factory(**kwargs)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"factory for {name!r} returned {type(backbone).__name__}, not a Backbone")
    return backbone


def _factory(name: str) -> Callable[..., Backbone]:
    if name.startswith(_timm.PREFIX):  # any timm model, by its timm name
        return functools.partial(_timm.timm_backbone, name[len(_timm.PREFIX) :])
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown backbone {name!r}; available: {', '.join(list_backbones())}, and any "
            f"timm model as {_timm.PREFIX}<model> (e.g. timm:resnet50)"
        )
    return _REGISTRY[name]


register_backbone("alexnet")(_alexnet.alexnet)
register_backbone("alexnet_small")(_alexnet.alexnet_small)
register_backbone("alexnet_torchvision")(_alexnet.alexnet_torchvision)
for _depth in sorted(_resnet.DEPTHS):
    register_backbone(f"resnet{_depth}")(getattr(_resnet, f"resnet{_depth}"))
del _depth
register_backbone("vgg16")(_vgg.vgg16)

__all__ = [
    "VGG",
    "AlexNet",
    "Backbone",
    "ResNetV2",
    "backbone_kwargs",
    "build_backbone",
    "list_backbones",
    "register_backbone",
]
