"""What the dense evaluations measure with: their settings, kept apart from the code that
runs them so the command line can show the defaults without importing torchvision."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DepthSettings:
    target: str = "depth"  # depth | normals
    steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3  # decoder (AdamW, cosine schedule)
    finetune: bool = False  # False: frozen backbone
    backbone_lr_scale: float = 0.1
    loss: str = "berhu"  # depth: berhu | silog; normals always use the cosine loss
    width: int = 64  # decoder channels
    layers: list[str] = field(default_factory=list)  # empty: the 3 coarsest resolutions
    seed: int = 0
    size: int = 96  # shorter image side, px (coarse: see docs/evaluation.md on 7-Scenes)


@dataclass
class DetectSettings:
    steps: int = 300
    batch_size: int = 4
    lr: float = 0.02  # SGD, momentum 0.9, linear warm-up then cosine
    warmup_steps: int = 50
    backbone_lr_scale: float = 1.0  # detection fine-tunes the whole network
    size: int = 224  # longer image side, px
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    fpn_channels: int = 128
    layers: list[str] = field(default_factory=list)  # empty: the 3 coarsest resolutions


@dataclass
class Voc07Settings:
    steps: int = 300
    batch_size: int = 16
    lr: float = 0.01  # SGD, momentum 0.9, cosine schedule; the head's rate
    backbone_lr_scale: float = 1.0  # the whole network is fine-tuned
    size: int = 224  # square side the images are brought to (shorter side, centre crop), px
    seed: int = 0
