"""Batched view builders: every operation acts on a whole (B, C, H, W) batch at once.

Tasks build their inputs from a batch of uint8 images with these functions instead of per-image
PIL calls, so augmentation costs a handful of tensor kernels per step. Random parameters are
drawn from an explicit CPU `torch.Generator` (then moved to the batch's device), which makes
views reproducible from (seed, step) on any device.

>>> import torch, selfsup
>>> V = selfsup.views
>>> images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)  # a batch, any device
>>> g = torch.Generator().manual_seed(0)
>>> x = V.random_resized_crop(images, 32, g, scale=(0.2, 1.0))  # one crop per image
>>> x = V.color_jitter(V.random_hflip(x, 0.5, g), g, brightness=0.4, contrast=0.4,
...                    saturation=0.4, p=0.8, hue=0.1)
>>> V.normalize(x, V.MEAN, V.STD).shape, V.tiles_2x2(x).shape  # counting's four tiles
(torch.Size([8, 3, 32, 32]), torch.Size([8, 4, 3, 16, 16]))
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align

# Resizing (OpenCV's kernels as batched tensor ops) has a module of its own; the view
# builders' callers reach it through this one.
from selfsup.data.resample import RESIZE_KERNELS as RESIZE_KERNELS
from selfsup.data.resample import resize as resize
from selfsup.data.resample import resize_each as resize_each
from selfsup.data.resample import resize_random_kernel as resize_random_kernel

# Inputs are normalised with the ImageNet statistics, whatever the data: a fixed convention
# keeps every exported backbone usable with one documented preprocessing.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)

# ITU-R BT.601 luma weights, as in torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)
# The plain average of R, G and B: the counting paper's grayscale ("replicating the average
# color across all 3 channels").
CHANNEL_MEAN = (1 / 3, 1 / 3, 1 / 3)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def on_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor drawn on the CPU (random view parameters), moved to the batch's device.

    non_blocking: a small copy from ordinary host memory is staged at once and the host goes
    on, where a blocking copy would wait for every kernel already queued on the GPU, once per
    parameter per step, and starve it.
    """
    return tensor.to(device, non_blocking=True)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) uint8 -> float32 in [0, 1]."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


def crop_at(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """`size` x `size` crops (exact pixels) with top-left corners `top`, `left`.

    (B, C, H, W) with top, left (B,) -> (B, C, size, size); with (B, K) -> (B, K, C, size,
    size), K crops of each image. Corners must keep the crops inside the images.
    """
    squeeze = top.dim() == 1
    top, left = (top[:, None], left[:, None]) if squeeze else (top, left)
    offsets = torch.arange(size)
    rows = on_device(top[..., None] + offsets, images.device)  # (B, K, size)
    cols = on_device(left[..., None] + offsets, images.device)  # (B, K, size)
    batch_index = torch.arange(images.shape[0], device=images.device)[:, None, None, None]
    # Advanced indexing with (B,1,1,1), (B,K,size,1), (B,K,1,size) gathers all crops at once.
    crops = images.permute(0, 2, 3, 1)[batch_index, rows[..., None], cols[..., None, :]]
    crops = crops.permute(0, 1, 4, 2, 3).contiguous()  # (B, K, C, size, size)
    return crops[:, 0] if squeeze else crops


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """A `size` x `size` crop at an independent random position per image (exact pixels)."""
    batch, _, height, width = images.shape
    if size > height or size > width:
        raise ValueError(f"crop size {size} is larger than the images ({height}x{width})")
    top = torch.randint(0, height - size + 1, (batch,), generator=generator)
    left = torch.randint(0, width - size + 1, (batch,), generator=generator)
    return crop_at(images, top, left, size)


def grid_extent(patch: int, gap: int, jitter: int, cells: int = 3) -> int:
    """Side (px) a `cells` x `cells` grid of patches with gaps and +-jitter needs."""
    return cells * patch + (cells - 1) * gap + 2 * jitter


def grid_positions(
    batch: int,
    image_size: int,
    patch: int,
    gap: int,
    jitter: int,
    generator: torch.Generator,
    cells: int = 3,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners (top, left), each (B, cells^2) in row-major cell order, of a grid of
    `patch` px patches `gap` px apart, placed at a random position in each image, every patch
    then shifted independently by up to +-`jitter` px in each direction.

    With jitter < gap / 2 neighbouring patches never touch, so no low-level continuity
    (edges running across the boundary, texture) tells where a patch came from.
    """
    extent = grid_extent(patch, gap, jitter, cells)
    if extent > image_size:
        raise ValueError(f"a grid of extent {extent} px does not fit {image_size} px images")
    origin_y = torch.randint(0, image_size - extent + 1, (batch, 1), generator=generator)
    origin_x = torch.randint(0, image_size - extent + 1, (batch, 1), generator=generator)
    cell = torch.arange(cells * cells)
    step = patch + gap
    shape = (batch, cells * cells)
    top = origin_y + jitter + (cell // cells) * step
    left = origin_x + jitter + (cell % cells) * step
    top = top + torch.randint(-jitter, jitter + 1, shape, generator=generator)
    left = left + torch.randint(-jitter, jitter + 1, shape, generator=generator)
    return top, left


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
    )
    boxes = on_device(boxes, images.device)
    source = to_float(images)
    return roi_align(
        source, boxes, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True
    )


def tiles_2x2(images: torch.Tensor) -> torch.Tensor:
    """(B, C, 2s, 2s) -> (B, 4, C, s, s): top-left, top-right, bottom-left, bottom-right."""
    batch, channels, height, width = images.shape
    if height % 2 or width % 2:
        raise ValueError(f"tiling needs even sides, got {height}x{width}")
    s_h, s_w = height // 2, width // 2
    tiles = images.reshape(batch, channels, 2, s_h, 2, s_w).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(batch, 4, channels, s_h, s_w)


def grayscale(images: torch.Tensor, weights: tuple[float, float, float] = LUMA) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, H, W): the weighted sum of the channels (BT.601 luma unless
    `weights` says otherwise, e.g. CHANNEL_MEAN) replicated over the three channels."""
    weights_t = images.new_tensor(weights).view(1, 3, 1, 1)
    return (images * weights_t).sum(dim=1, keepdim=True).expand_as(images).contiguous()


def grayscale_where(
    images: torch.Tensor, mask: torch.Tensor, weights: tuple[float, float, float] = LUMA
) -> torch.Tensor:
    """Image i becomes grayscale (`grayscale(..., weights)`) where `mask[i]` (B,) is true."""
    mask = on_device(mask, images.device)
    return torch.where(mask.view(-1, 1, 1, 1), grayscale(images, weights), images)


def random_grayscale(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Replace each image by its (luma) grayscale version with probability `p`."""
    return grayscale_where(images, torch.rand(images.shape[0], generator=generator) < p)


def random_hflip(images: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability `p`."""
    mask = on_device(torch.rand(images.shape[0], generator=generator) < p, images.device)
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def color_jitter(
    images: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    p: float = 1.0,
    hue: float = 0.0,
) -> torch.Tensor:
    """Per-image random brightness, contrast and saturation factors in [1-a, 1+a], then a
    hue shift in [-hue, hue] turns of the colour wheel.

    Applied with probability `p` per image, in a fixed order (brightness, contrast,
    saturation, hue), on float images in [0, 1]. With `hue=0` no hue shift is drawn, so the
    random stream (and every earlier run's views) stays as it was.
    """
    batch = images.shape[0]
    device = images.device

    def factors(amount: float) -> torch.Tensor:
        f = _uniform(batch, max(0.0, 1 - amount), 1 + amount, generator)
        return on_device(f, device).view(-1, 1, 1, 1)

    applied = on_device(torch.rand(batch, generator=generator) < p, device).view(-1, 1, 1, 1)
    out = images * factors(brightness)
    mean_luma = grayscale(out).mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean_luma) * factors(contrast) + mean_luma
    gray = grayscale(out)
    out = (out - gray) * factors(saturation) + gray
    out = out.clamp_(0.0, 1.0)
    if hue > 0:
        out = shift_hue(out, on_device(_uniform(batch, -hue, hue, generator), device))
    return torch.where(applied, out, images)


def shift_hue(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image's hue by `turns[i]` of the colour wheel (HSV, saturation and value
    kept), as torchvision's adjust_hue does for one image, for a whole batch at once."""
    value = images.amax(dim=1)
    delta = value - images.amin(dim=1)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    saturation = torch.where(value > 0, delta / torch.where(value > 0, value, 1.0), 0.0)
    r, g, b = ((value - c) / safe for c in images.unbind(dim=1))
    red_max, green_max = images[:, 0] == value, images[:, 1] == value
    sector = torch.where(red_max, b - g, torch.where(green_max, 2.0 + r - b, 4.0 + g - r))
    hue = torch.where(delta > 0, sector / 6.0, 0.0)
    hue = torch.remainder(hue + turns.view(-1, 1, 1), 1.0)
    # HSV -> RGB: each channel is value minus a piecewise-linear ramp of the hue.
    # Offsets 5, 3, 1 for R, G, B, made on the device (no host copy inside a step).
    offsets = torch.arange(5.0, 0.0, -2.0, device=hue.device, dtype=hue.dtype).view(1, 3, 1, 1)
    k = torch.remainder(hue.unsqueeze(1) * 6.0 + offsets, 6.0)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return value.unsqueeze(1) - (value * saturation).unsqueeze(1) * ramp


def normalize(
    images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """Per-channel (x - mean) / std."""
    # Built on the host and sent without blocking: `images.new_tensor` on a GPU is a blocking
    # copy, a host sync every batch.
    mean_t = on_device(torch.tensor(mean, dtype=images.dtype), images.device).view(1, -1, 1, 1)
    std_t = on_device(torch.tensor(std, dtype=images.dtype), images.device).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def standardize(images: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Each image and channel to zero mean, unit standard deviation (flat ones: mean only).

    Per-patch standardisation (Doersch et al. 2015, Noroozi & Favaro 2016) hides brightness
    and contrast differences between patches, a low-level cue to where a patch came from.
    """
    mean = images.mean(dim=(-2, -1), keepdim=True)
    std = images.std(dim=(-2, -1), keepdim=True)
    return (images - mean) / torch.where(std < eps, torch.ones_like(std), std)


def drop_color_channels(
    images: torch.Tensor, generator: torch.Generator, noise_scale: float = 0.01
) -> torch.Tensor:
    """Keep one random channel per image; replace the other two by zero-mean Gaussian noise
    with standard deviation `noise_scale` times that of the kept channel.

    Colour dropping (Doersch et al. 2015; Doersch & Zisserman 2017): chromatic aberration
    shifts colour channels against each other by an amount that depends on the position in
    the lens, which would tell a patch's absolute position; one channel carries no such shift.
    Expects normalised (zero-centred) images.
    """
    batch, channels = images.shape[:2]
    keep = on_device(torch.randint(0, channels, (batch,), generator=generator), images.device)
    kept = images[torch.arange(batch, device=images.device), keep]  # (B, H, W)
    std = kept.flatten(1).std(dim=1).view(batch, 1, 1, 1)
    noise = on_device(torch.randn(images.shape, generator=generator), images.device) * noise_scale
    is_kept = torch.arange(channels, device=images.device)[None, :] == keep[:, None]
    return torch.where(is_kept.view(batch, channels, 1, 1), images, noise * std)


def with_mask_channel(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Float images (B, C, H, W) and masks (B, H, W) as one (B, C + 1, H, W) float tensor.

    Any geometric op (crop, resize, flip) applied to it moves image and mask identically;
    `split_mask_channel` takes them apart again.
    """
    return torch.cat([to_float(images), masks[:, None].to(torch.float32)], dim=1)


def split_mask_channel(joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C + 1, H, W) -> images (B, C, H, W), masks (B, H, W) (resampled: values in [0, 1])."""
    return joint[:, :-1], joint[:, -1]


# sRGB (D65) -> CIE XYZ, and the D65 reference white, as in skimage and OpenCV.
_RGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_D65_WHITE = (0.950456, 1.0, 1.088754)
_LAB_DELTA = 6 / 29  # CIE: f(t) is a cube root above delta^3 and linear below


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (B, 3, H, W) -> CIE Lab (B, 3, H, W): L in [0, 100], a, b ~ [-110, 110]."""
    rgb = images.float().clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = linear.new_tensor(_RGB_TO_XYZ)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    t = xyz / xyz.new_tensor(_D65_WHITE).view(1, 3, 1, 1)
    delta = _LAB_DELTA
    f = torch.where(t > delta**3, t.clamp_min(delta**3) ** (1 / 3), t / (3 * delta**2) + 4 / 29)
    lightness = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([lightness, a, b], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (B, 3, H, W) -> sRGB in [0, 1]; colours outside the sRGB gamut are clipped."""
    lab = lab.float()
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], dim=1)
    delta = _LAB_DELTA
    t = torch.where(f > delta, f**3, 3 * delta**2 * (f - 4 / 29))
    xyz = t * lab.new_tensor(_D65_WHITE).view(1, 3, 1, 1)
    matrix = torch.linalg.inv(lab.new_tensor(_RGB_TO_XYZ))
    linear = torch.einsum("ij,bjhw->bihw", matrix, xyz).clamp(0.0, 1.0)
    rgb = torch.where(
        linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * linear
    )
    return rgb.clamp(0.0, 1.0)
