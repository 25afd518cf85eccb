"""Decoding one image to a fixed-size RGB uint8 tensor.

Every image, whatever its mode (grayscale, RGBA, palette, CMYK, 16-bit), becomes a
(3, size, size) uint8 tensor by one documented rule, used by both the in-memory cache and the
streaming loader so the two give identical pixels:

0. turn it as it is displayed: a camera stores a photo taken upright or upside down as the
   sensor saw it, with an EXIF orientation tag that viewers apply (one of eight: mirror,
   rotations and transposes), so the pixels are rotated and mirrored as the tag says;
1. convert to 8-bit RGB (16-bit images are divided by 257, 32-bit and float images are
   stretched by their own range, alpha is composited on black, palette and CMYK go through
   PIL's conversion);
2. resize so the shorter side equals `size` (antialiased bilinear when shrinking, bicubic when
   an image smaller than `size` is upscaled; `small_images="reject"` refuses those instead);
3. centre-crop to `size` x `size`.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError


class BadImageError(ValueError):
    """An image could not be used; the message names the file (or array index) and why."""

    def __init__(self, name: str, reason: str | None = None):
        # One-argument form: unpickling (the error of a worker process) calls cls(message).
        super().__init__(name if reason is None else f"{name}: {reason}")
        self.name, self.reason = name, reason


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8."""
    if image.mode.startswith("I;16"):
        # 16-bit single channel: the full 16-bit range maps to 0..255 (value / 257).
        gray = (np.asarray(image, dtype=np.float64) / 257.0).round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("I", "F"):
        # 32-bit integer or float: no natural range, so stretch the image's own range.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        gray = ((array - low) * scale).round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        array = np.asarray(rgba, dtype=np.float32)
        rgb = array[:, :, :3] * (array[:, :, 3:] / 255.0)  # composite on black
        return rgb.round().astype(np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _is_empty(data: bytes | str | Path) -> bool:
    if isinstance(data, bytes | bytearray | memoryview):
        return len(data) == 0
    path = Path(data)
    return path.is_file() and path.stat().st_size == 0


def open_image(data: bytes | str | Path, name: str, min_size: int | None = None) -> np.ndarray:
    """Decode encoded bytes or a file to an (H, W, 3) uint8 array, or raise BadImageError.

    With `min_size`, large JPEGs are decoded at a reduced scale (libjpeg DCT scaling) that
    still keeps the shorter side >= `min_size`: several times faster for ImageNet-size files.
    """
    if _is_empty(data):  # common after an interrupted copy; PIL would only say "unidentified"
        raise BadImageError(name, "empty file (0 bytes)")
    try:
        source = io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PIL warns on odd-but-valid files; we only care
            with Image.open(source) as image:  # about failures, which raise.
                if min_size is not None and image.format == "JPEG":
                    image.draft("RGB", (min_size, min_size))
                image.load()
                array = _to_rgb_array(ImageOps.exif_transpose(image))
    except FileNotFoundError as err:
        raise BadImageError(name, "file not found") from err
    except UnidentifiedImageError as err:
        raise BadImageError(name, "not a recognised image format") from err
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(name, f"cannot be decoded ({err})") from err
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise BadImageError(name, "image has no pixels")
    return array


def fitted_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) once the shorter side is brought to `size`, aspect ratio kept."""
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def centre_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(..., H, W) -> (..., size, size), the centre (rounded towards the top-left)."""
    height, width = image.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return image[..., top : top + size, left : left + size].contiguous()


def fit_to_square(
    array: np.ndarray, size: int, name: str, small_images: str = "upscale"
) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, size, size) uint8: shorter side to `size`, centre crop."""
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise BadImageError(
            name, f"expected an (H, W, 3) uint8 image, got {array.shape} {array.dtype}"
        )
    image = torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1)  # (3, H, W)
    return fit_tensor_to_square(image, size, name, small_images)


def fit_tensor_to_square(
    image: torch.Tensor, size: int, name: str, small_images: str = "upscale"
) -> torch.Tensor:
    """(3, H, W) uint8 on any device -> (3, size, size) uint8 on the same device, by the rule
    of `fit_to_square` (the GPU JPEG decoder fits its images with it too)."""
    height, width = image.shape[-2:]
    short = min(height, width)
    if short < size and small_images == "reject":
        raise BadImageError(
            name, f"{width}x{height} is smaller than image_size={size} (data.small_images=reject)"
        )
    if short != size:
        upscale = short < size
        resized = torch.nn.functional.interpolate(
            image[None].float(),
            size=fitted_shape(height, width, size),
            mode="bicubic" if upscale else "bilinear",
            antialias=not upscale,
            align_corners=False,
        )
        image = resized[0].round().clamp(0, 255).to(torch.uint8)
    return centre_crop(image, size)


def fit_mask_to_square(mask: np.ndarray, size: int) -> torch.Tensor:
    """(H, W) 0/1 mask -> (size, size) uint8 0/1 with exactly the geometry `fit_to_square` gives
    its image (shorter side to `size`, centre crop): resampled bilinearly, thresholded at 1/2."""
    out = torch.from_numpy(np.array(mask, dtype=np.uint8, copy=True))
    height, width = out.shape
    if min(height, width) != size:
        resized = torch.nn.functional.interpolate(
            out[None, None].float(),
            size=fitted_shape(height, width, size),
            mode="bilinear",
            antialias=min(height, width) > size,
            align_corners=False,
        )
        out = (resized[0, 0] >= 0.5).to(torch.uint8)
    return centre_crop(out, size)
