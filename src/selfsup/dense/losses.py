"""Training losses of the dense heads, averaged over valid pixels only."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def berhu(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Reverse Huber (Laina et al. 2016): |d| below c, (d^2 + c^2) / 2c above, with c one fifth
    of the batch's largest absolute error, so large errors get L2 and small ones L1 gradients.
    Shapes (N, H, W) metres; `valid` (N, H, W) bool."""
    diff = (pred - target)[valid].abs()
    if diff.numel() == 0:
        return pred.sum() * 0.0
    c = (0.2 * diff.max()).detach().clamp_min(1e-6)
    return torch.where(diff <= c, diff, (diff**2 + c**2) / (2 * c)).mean()


def scale_invariant_log(
    pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, lam: float = 0.5
) -> torch.Tensor:
    """Eigen et al. 2014: mean(d^2) - lam * mean(d)^2 with d = log pred - log true. lam=0.5 as
    in the paper: half-way between the plain log L2 (0) and fully scale invariant (1), so the
    decoder still has to get the scale right."""
    d = pred[valid].clamp_min(1e-3).log() - target[valid].log()
    if d.numel() == 0:
        return pred.sum() * 0.0
    return (d**2).mean() - lam * d.mean() ** 2


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - cos(angle) between (N, 3, H, W) predicted and true normals, over valid pixels."""
    cosine = F.cosine_similarity(pred, target, dim=1)  # (N, H, W)
    if not valid.any():
        return pred.sum() * 0.0
    return (1 - cosine[valid]).mean()


DEPTH_LOSSES = {"berhu": berhu, "silog": scale_invariant_log}
