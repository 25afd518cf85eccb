"""Frozen features of every named layer, pooled, and cached on disk.

The papers' linear-probe protocol reads each layer's feature map average-pooled to a small grid
so that every layer gives a comparable number of dimensions (a few thousand). Here the grid of
a layer is the largest g with channels * g * g <= `max_dims` (and g no larger than the map);
`max_dims=0` means global average pooling (one value per channel, what kNN reads).

Features are cached per (weights, data, layer, pooling): the key hashes the backbone's weights
and the decoded images, so a retrained checkpoint or changed data never reads stale features.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from selfsup.backbones import Backbone
from selfsup.data.trunk_input import TrunkInput
from selfsup.outputs import written_atomically
from selfsup.runtime import autocast


def pooled_grid(channels: int, height: int, max_dims: int) -> int:
    """Largest g <= height with channels * g^2 <= max_dims (at least 1; 0 dims: global)."""
    if max_dims <= 0:
        return 1
    return max(1, min(height, math.isqrt(max(1, max_dims // channels))))


# Images per forward pass. A GPU needs large batches to be kept busy (no gradients are kept, so
# memory is no limit at these sizes); on CPU 256 is as fast as larger batches.
CPU_BATCH_SIZE = 256
CUDA_BATCH_SIZE = 1024


def default_batch_size(device: torch.device) -> int:
    return CUDA_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def batches_on(
    images: torch.Tensor, batch_size: int, device: torch.device
) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, batch on `device`) for consecutive batches of `images`.

    To a GPU each batch goes from page-locked memory: the copy is queued (non_blocking) and the
    host goes on to launch the forward pass, where a copy from ordinary memory would wait for
    the GPU to finish the previous batch.
    """
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        if device.type == "cuda" and batch.device.type == "cpu":
            batch = batch.pin_memory()
        yield start, batch.to(device, non_blocking=True)


@torch.no_grad()
def extract_features(
    backbone: Backbone,
    images: torch.Tensor,
    layers: list[str],
    *,
    trunk_input: TrunkInput,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    max_dims: int = 4096,
    batch_size: int | None = None,
    progress: bool = True,
    desc: str = "features",
    keep_on_device: bool = False,
) -> dict[str, torch.Tensor]:
    """(N, 3, S, S) uint8 -> {layer: (N, D) float16} pooled, flattened features, the images
    fed as the run's record says (`trunk_input`: colour, grayscale or lightness).

    One forward per batch serves every layer. Stored as float16 to halve memory; the probes
    standardise them in float32. `batch_size` None: `default_batch_size(device)`. The features
    are collected on `device` (no host sync per batch) and returned in host memory, or left on
    `device` with `keep_on_device` (for probes that run there).
    """
    batch_size = batch_size or default_batch_size(device)
    backbone.eval().to(device)
    if device.type == "cuda":  # cuDNN's NHWC kernels want channels_last weights too
        backbone.to(memory_format=torch.channels_last)
    shapes = backbone.feature_shapes(images.shape[-1])
    grids = {layer: pooled_grid(shapes[layer][0], shapes[layer][1], max_dims) for layer in layers}
    out = {
        layer: torch.empty(
            len(images), shapes[layer][0] * grids[layer] ** 2, dtype=torch.float16, device=device
        )
        for layer in layers
    }
    batches = tqdm(
        batches_on(images, batch_size, device),
        desc=desc,
        total=math.ceil(len(images) / batch_size),
        unit="batch",
        disable=not progress,
        leave=False,
    )
    for start, batch in batches:
        x = trunk_input.prepare(batch).contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            maps = backbone.forward_layers(x, layers)
        for layer, fmap in maps.items():
            pooled = F.adaptive_avg_pool2d(fmap.float(), grids[layer])  # (B, C, g, g)
            out[layer][start : start + len(batch)] = pooled.flatten(1)
    if keep_on_device:
        return out
    return {layer: features.cpu() for layer, features in out.items()}  # one copy, one sync


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------


def fingerprint(tensors: list[torch.Tensor]) -> str:
    """A content hash of tensors (shapes, dtypes and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    for tensor in tensors:
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_fingerprint(backbone: Backbone) -> str:
    state = backbone.state_dict()
    return fingerprint([state[k] for k in sorted(state)])


def cached_features(
    backbone: Backbone,
    images: torch.Tensor,
    layers: list[str],
    *,
    cache_dir: Path | None,
    data_key: str,
    **kwargs,
) -> dict[str, torch.Tensor]:
    """`extract_features`, reading and writing `cache_dir` (None: no cache).

    `data_key` identifies the images (their fingerprint); the weights and the way images are
    fed (`trunk_input`) are hashed here. Files
    hold float16 features in host memory whatever device computed them, so a cached and a fresh
    evaluation read the same numbers.
    """
    if cache_dir is None:
        return extract_features(backbone, images, layers, **kwargs)
    model_key = weights_fingerprint(backbone)
    pooling = kwargs.get("max_dims", 4096)
    fed = kwargs["trunk_input"].colour
    paths = {
        layer: cache_dir / "features" / f"{model_key}-{data_key}-{layer}-d{pooling}-{fed}.pt"
        for layer in layers
    }
    home = kwargs["device"] if kwargs.get("keep_on_device") else torch.device("cpu")
    found = {
        layer: torch.load(path, map_location=home)
        for layer, path in paths.items()
        if path.is_file()
    }
    missing = [layer for layer in layers if layer not in found]
    if missing:
        computed = extract_features(backbone, images, missing, **kwargs)
        for layer, features in computed.items():
            # Atomic: a killed run leaves no partial file, two evaluations at once no mix.
            with written_atomically(paths[layer]) as temporary:
                torch.save(features.cpu(), temporary)
        found.update(computed)
    return {layer: found[layer] for layer in layers}
