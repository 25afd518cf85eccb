"""Batched view builders: every operation acts on a whole (B, C, H, W) batch at once.

Tasks build their inputs from a batch of uint8 images with these functions instead of per-image
PIL calls, so augmentation costs a handful of tensor kernels per step. Random parameters are
drawn from an explicit CPU `torch.Generator` (then moved to the batch's device), which makes
views reproducible from (seed, step) on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

# Downsampling kernels. "lanczos" is approximated by antialiased bicubic (torch has no Lanczos):
# like Lanczos it low-passes before subsampling, which is what matters for the counting task's
# shortcut guard (no kernel-specific aliasing pattern to latch onto).
RESIZE_KERNELS = ("nearest", "bilinear", "bicubic", "area", "lanczos")

# ITU-R BT.601 luma weights, as in torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 -> float32 in [0, 1]."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A `size` x `size` crop at an independent random position per image (exact pixels)."""
    batch, _, height, width = images.shape
    if size > height or size > width:
        raise ValueError(f"crop size {size} is larger than the images ({height}x{width})")
    top = torch.randint(0, height - size + 1, (batch,), generator=generator)
    left = torch.randint(0, width - size + 1, (batch,), generator=generator)
    offsets = torch.arange(size)
    rows = (top[:, None] + offsets).to(images.device)  # (B, size)
    cols = (left[:, None] + offsets).to(images.device)  # (B, size)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    # Advanced indexing with (B,1,1), (B,size,1), (B,1,size) gathers B crops in one kernel.
    crops = images.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()  # (B, C, size, size)


def random_resized_crop(
    images: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Inception-style crop (random area fraction and aspect ratio) resized to `size`.

    One `roi_align` call (bilinear) crops and resizes the whole batch.
    """
    batch, _, height, width = images.shape
    area = _uniform(batch, *scale, generator) * height * width
    log_ratio = _uniform(
        batch,
        torch.log(torch.tensor(ratio[0])).item(),
        torch.log(torch.tensor(ratio[1])).item(),
        generator,
    )
    aspect = torch.exp(log_ratio)
    crop_w = torch.sqrt(area * aspect).clamp(1, width)
    crop_h = torch.sqrt(area / aspect).clamp(1, height)
    x0 = torch.rand(batch, generator=generator) * (width - crop_w)
    y0 = torch.rand(batch, generator=generator) * (height - crop_h)
    boxes = torch.stack(
        [torch.arange(batch, dtype=torch.float32), x0, y0, x0 + crop_w, y0 + crop_h], dim=1
    ).to(images.device)
    source = to_float(images)
    return roi_align(
        source, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True
    )


def resize(images: torch.Tensor, size: int, kernel: str) -> torch.Tensor:
    """Resize a float batch to `size` x `size` with one of RESIZE_KERNELS."""
    if kernel not in RESIZE_KERNELS:
        raise ValueError(f"unknown resize kernel {kernel!r}; choose from {RESIZE_KERNELS}")
    if kernel == "nearest":
        return F.interpolate(images, size=(size, size), mode="nearest-exact")
    if kernel == "area":
        return F.adaptive_avg_pool2d(images, (size, size))
    mode = "bicubic" if kernel in ("bicubic", "lanczos") else "bilinear"
    out = F.interpolate(
        images, size=(size, size), mode=mode, align_corners=False, antialias=kernel == "lanczos"
    )
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def resize_random_kernel(
    images: torch.Tensor, size: int, kernels: tuple[str, ...], generator: torch.Generator
) -> torch.Tensor:
    """Resize each image with a kernel drawn uniformly from `kernels` (one call per kernel)."""
    choice = torch.randint(0, len(kernels), (images.shape[0],), generator=generator)
    out = images.new_empty(images.shape[0], images.shape[1], size, size)
    for k, kernel in enumerate(kernels):
        rows = (choice == k).nonzero().flatten().to(images.device)
        if rows.numel():
            out[rows] = resize(images[rows], size, kernel)
    return out


def tiles_2x2(images: torch.Tensor) -> torch.Tensor:
    """(B, C, 2s, 2s) -> (B, 4, C, s, s): top-left, top-right, bottom-left, bottom-right."""
    batch, channels, height, width = images.shape
    if height % 2 or width % 2:
        raise ValueError(f"tiling needs even sides, got {height}x{width}")
    s_h, s_w = height // 2, width // 2
    tiles = images.reshape(batch, channels, 2, s_h, 2, s_w).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(batch, 4, channels, s_h, s_w)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W) luma replicated over the three channels."""
    weights = images.new_tensor(LUMA).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True).expand_as(images).contiguous()


def random_grayscale(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Replace each image by its grayscale version with probability `p`."""
    mask = (torch.rand(images.shape[0], generator=generator) < p).to(images.device)
    return torch.where(mask.view(-1, 1, 1, 1), grayscale(images), images)


def random_hflip(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability `p`."""
    mask = (torch.rand(images.shape[0], generator=generator) < p).to(images.device)
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def color_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    p: float = 1.0,
) -> torch.Tensor:
    """Per-image random brightness, contrast and saturation factors in [1-a, 1+a].

    Applied with probability `p` per image, in a fixed order (brightness, contrast,
    saturation), on float images in [0, 1].
    """
    batch = images.shape[0]
    device = images.device

    def factors(amount: float) -> torch.Tensor:
        f = _uniform(batch, max(0.0, 1 - amount), 1 + amount, generator)
        return f.to(device).view(-1, 1, 1, 1)

    applied = (torch.rand(batch, generator=generator) < p).to(device).view(-1, 1, 1, 1)
    out = images * factors(brightness)
    mean_luma = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean_luma) * factors(contrast) + mean_luma
    gray = grayscale(out)
    out = (out - gray) * factors(saturation) + gray
    return torch.where(applied, out.clamp_(0.0, 1.0), images)


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Per-channel (x - mean) / std."""
    mean_t = images.new_tensor(mean).view(1, -1, 1, 1)
    std_t = images.new_tensor(std).view(1, -1, 1, 1)
    return (images - mean_t) / std_t
