"""`selfsup eval depth`: train a light decoder on a backbone to predict depth or surface
normals from RGB, then score it on held-out frames.

Depth is predicted as log-depth (exp of the decoder's output, its bias started at the log of the
training set's median depth) so it is always positive and errors scale with distance; normals
as three channels normalised to unit length. With `frozen` (the default) only the decoder
trains and the backbone stays in eval mode; with fine-tuning the backbone trains too, at
`backbone_lr_scale` times the decoder's learning rate. No setting is chosen on the test frames:
all are fixed in advance, so no validation split is needed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from selfsup.config import ConfigError
from selfsup.dense.decoder import DenseModel, pick_layers
from selfsup.dense.geometry import normals_from_depth
from selfsup.dense.losses import DEPTH_LOSSES, cosine_loss
from selfsup.dense.metrics import depth_metrics, normal_metrics
from selfsup.dense.rgbd import RgbdFrames
from selfsup.dense.settings import DepthSettings
from selfsup.runs import LoadedBackbone
from selfsup.runtime import autocast, resolve_device, resolve_precision


@dataclass
class DenseTargets:
    values: torch.Tensor  # depth (N, 1, H, W) metres or normals (N, 3, H, W)
    valid: torch.Tensor  # (N, H, W) bool


def make_targets(frames: RgbdFrames, target: str) -> DenseTargets:
    if target == "depth":
        return DenseTargets(frames.depth[:, None], frames.valid)
    if frames.intrinsics is None:
        raise ConfigError(
            f"{frames.name}: normals need camera intrinsics; put a 3x3 intrinsics.txt in the "
            "folder (fx 0 cx / 0 fy cy / 0 0 1, at the images' full resolution)"
        )
    normals, valid = normals_from_depth(frames.depth, frames.intrinsics)
    return DenseTargets(normals, valid)


def typical_value(targets: DenseTargets, target: str) -> torch.Tensor:
    """The one answer that ignores the image: the training set's median depth (1,) or its
    mean normal direction (3,)."""
    if target == "depth":
        return targets.values[:, 0][targets.valid].median().reshape(1)
    return F.normalize(targets.values.permute(0, 2, 3, 1)[targets.valid].mean(0), dim=0)


def start_at_typical_value(model: DenseModel, value: torch.Tensor, target: str) -> None:
    """Set the prediction bias so that an untrained decoder outputs `value`: it then learns
    deviations from the obvious answer rather than spending its first steps finding it."""
    with torch.no_grad():
        model.decoder.predict.bias.copy_(value.log() if target == "depth" else value)


def score(pred: torch.Tensor, targets: DenseTargets, target: str) -> dict:
    if target == "depth":
        return depth_metrics(pred[:, 0], targets.values[:, 0], targets.valid)
    return normal_metrics(pred, targets.values, targets.valid)


def to_prediction(raw: torch.Tensor, target: str) -> torch.Tensor:
    """Decoder output -> depth (B, 1, H, W) metres, or unit normals (B, 3, H, W)."""
    if target == "depth":
        return raw.float().clamp(-10, 10).exp()
    return F.normalize(raw.float(), dim=1)


def dense_loss(
    pred: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, settings: DepthSettings
) -> torch.Tensor:
    """The training loss on one batch: `values` and `valid` as in DenseTargets."""
    if settings.target == "depth":
        return DEPTH_LOSSES[settings.loss](pred[:, 0], values[:, 0], valid)
    return cosine_loss(pred, values, valid)


def hflip_batch(x: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, normals: bool):
    """Mirror images and targets left-right; a mirrored scene's normals flip their x."""
    values = values.flip(-1)
    if normals:
        values = values * values.new_tensor([-1.0, 1.0, 1.0]).view(1, 3, 1, 1)
    return x.flip(-1), values, valid.flip(-1)


def build_model(loaded: LoadedBackbone, size: int, settings: DepthSettings) -> DenseModel:
    layers = settings.layers or pick_layers(loaded.backbone, size, 3)
    channels = 1 if settings.target == "depth" else 3
    model = DenseModel(loaded.backbone, layers, channels, settings.width)
    model.trunk_input = loaded.input  # how the trunk is fed, in training and prediction
    return model


def optimizer_for(model: DenseModel, settings: DepthSettings) -> torch.optim.Optimizer:
    groups = [{"params": model.decoder.parameters(), "lr": settings.lr}]
    if settings.finetune:
        groups.append(
            {"params": model.backbone.parameters(), "lr": settings.lr * settings.backbone_lr_scale}
        )
    for group in groups:
        group["initial_lr"] = group["lr"]
    return torch.optim.AdamW(groups, weight_decay=1e-4)


def train_decoder(
    model: DenseModel,
    train: RgbdFrames,
    targets: DenseTargets,
    settings: DepthSettings,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    progress: bool,
) -> list[float]:
    """`settings.steps` steps of random batches (with random flips); returns the losses."""
    generator = torch.Generator().manual_seed(settings.seed)
    optimizer = optimizer_for(model, settings)
    model.train()
    if not settings.finetune:
        model.backbone.eval()  # frozen: BN statistics stay those of pretraining
    losses = []
    bar = tqdm(range(settings.steps), desc=f"{settings.target} decoder", disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:  # cosine decay to zero
            group["lr"] = (
                group["initial_lr"] * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
            )
        rows = torch.randint(len(train), (settings.batch_size,), generator=generator)
        x = model.trunk_input.prepare(train.images[rows])
        values, valid = targets.values[rows], targets.valid[rows]
        if torch.rand((), generator=generator) < 0.5:
            x, values, valid = hflip_batch(x, values, valid, settings.target == "normals")
        with autocast(device, amp_dtype):
            raw = model(x.to(device), frozen=not settings.finetune)
        pred = to_prediction(raw, settings.target)
        loss = dense_loss(pred, values.to(device), valid.to(device), settings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    return losses


@torch.no_grad()
def predict(
    model: DenseModel,
    images: torch.Tensor,
    target: str,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int = 16,
) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> predictions (N, C, H, W) on the CPU."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = model.trunk_input.prepare(images[start : start + batch_size]).to(device)
        with autocast(device, amp_dtype):
            out.append(to_prediction(model(x, frozen=True), target).cpu())
    return torch.cat(out)


def coarse_note(train: RgbdFrames) -> str:
    height, width = train.images.shape[-2:]
    if train.registered:
        return f"evaluated at {width}x{height} px"
    return (
        f"colour and depth cameras are not registered (depth is offset from colour by several "
        f"pixels at full resolution), so this is a coarse evaluation at {width}x{height} px"
    )


def run_depth_eval(
    loaded: LoadedBackbone,
    train: RgbdFrames,
    test: RgbdFrames,
    settings: DepthSettings,
    device: str = "auto",
    progress: bool = True,
    grid_path: Path | None = None,
) -> dict:
    """Train the decoder on `train`, score it on `test`; a JSON-ready result."""
    from selfsup.dense.figures import depth_grid

    if settings.target == "depth" and settings.loss not in DEPTH_LOSSES:
        raise ConfigError(f"--loss: expected one of {sorted(DEPTH_LOSSES)}, got {settings.loss!r}")
    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    size = min(train.images.shape[-2:])
    model = build_model(loaded, size, settings)
    train_targets = make_targets(train, settings.target)
    test_targets = make_targets(test, settings.target)
    typical = typical_value(train_targets, settings.target)
    start_at_typical_value(model, typical, settings.target)
    torch_device = resolve_device(device)
    amp_dtype = resolve_precision("auto", torch_device)
    model.to(torch_device)
    losses = train_decoder(model, train, train_targets, settings, torch_device, amp_dtype, progress)
    pred = predict(model, test.images, settings.target, torch_device, amp_dtype)
    constant = typical.view(1, -1, 1, 1).expand_as(pred)
    result = {
        "protocol": settings.target,
        "model": loaded.name,
        "source": loaded.source,
        "step": loaded.step,
        "data": train.name,
        "test_data": test.name,
        "train_frames": [train.indices[0], train.indices[-1]],
        "test_frames": [test.indices[0], test.indices[-1]],
        "resolution": list(train.images.shape[-2:]),
        "registered": train.registered,
        "note": coarse_note(train),
        "mode": "finetune" if settings.finetune else "frozen",
        "layers": model.layers,
        "settings": asdict(settings),
        "final_train_loss": losses[-1] if losses else None,
        "metrics": score(pred, test_targets, settings.target),
        # The floor any features must beat: the training set's typical value everywhere.
        "constant_baseline": score(constant, test_targets, settings.target),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if grid_path is not None:
        depth_grid(test, pred, test_targets.values, test_targets.valid, settings.target, grid_path)
        result["grid"] = str(grid_path)
    return result
