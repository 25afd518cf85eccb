"""Camera geometry: intrinsics under resizing, and surface normals from depth.

Normals are made the way NYU's are usually derived: back-project every pixel to a 3-D point
with the pinhole intrinsics, take central differences of the points along the image rows and
columns, and cross them. Camera frame: x right, y down, z forward; normals point towards the
camera (n . p < 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def scale_intrinsics(
    intrinsics: torch.Tensor, old_shape: tuple[int, int], new_shape: tuple[int, int]
) -> torch.Tensor:
    """(3, 3) K for an image of `old_shape` (H, W) -> K for the same image resized to
    `new_shape`. Pixel centres map as (u + 0.5) * s - 0.5, hence the half-pixel terms."""
    sy, sx = new_shape[0] / old_shape[0], new_shape[1] / old_shape[1]
    k = intrinsics.double().clone()
    k[0, 0], k[0, 2] = k[0, 0] * sx, (k[0, 2] + 0.5) * sx - 0.5
    k[1, 1], k[1, 2] = k[1, 1] * sy, (k[1, 2] + 0.5) * sy - 0.5
    return k.float()


def back_project(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(N, H, W) metres -> (N, 3, H, W) camera-frame points."""
    height, width = depth.shape[-2:]
    fx, fy, cx, cy = (float(v) for v in intrinsics[[0, 1, 0, 1], [0, 1, 2, 2]])
    v, u = torch.meshgrid(
        torch.arange(height, dtype=depth.dtype, device=depth.device),
        torch.arange(width, dtype=depth.dtype, device=depth.device),
        indexing="ij",
    )
    x = (u - cx) / fx * depth
    y = (v - cy) / fy * depth
    return torch.stack([x, y, depth], dim=1)


def normals_from_depth(
    depth: torch.Tensor, intrinsics: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) metres (0 = invalid) -> unit normals (N, 3, H, W) and validity (N, H, W).

    A normal is valid where the pixel and its four neighbours have depth (central differences
    need both sides); border pixels are never valid.
    """
    points = back_project(depth.double(), intrinsics)  # (N, 3, H, W)
    valid = depth > 0
    along_u = torch.zeros_like(points)
    along_v = torch.zeros_like(points)
    along_u[..., 1:-1] = points[..., 2:] - points[..., :-2]
    along_v[..., 1:-1, :] = points[..., 2:, :] - points[..., :-2, :]
    normals = torch.cross(along_u, along_v, dim=1)
    facing_away = (normals * points).sum(1, keepdim=True) > 0
    normals = torch.where(facing_away, -normals, normals)
    ok = torch.zeros_like(valid)
    ok[:, 1:-1, 1:-1] = (
        valid[:, 1:-1, 1:-1]
        & valid[:, 1:-1, 2:]
        & valid[:, 1:-1, :-2]
        & valid[:, 2:, 1:-1]
        & valid[:, :-2, 1:-1]
    )
    length = normals.norm(dim=1)
    ok &= length > 0
    return F.normalize(normals, dim=1).float(), ok
