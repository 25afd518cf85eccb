"""Depth and surface-normal metrics, over valid pixels only.

Every metric pools all valid pixels of the test set (each pixel counts once, whichever image it
is in), the convention of most NYU depth and normal tables. Pixels where the mask is False
never enter, whatever the prediction there.
"""

from __future__ import annotations

import math

import torch

ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)  # degrees


def depth_metrics(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dict:
    """Predicted and true depth (same shape, metres) -> delta1/2/3, abs_rel, rmse, log10.

    delta_k: fraction of pixels with max(pred / true, true / pred) < 1.25^k;
    abs_rel: mean |pred - true| / true; rmse: sqrt(mean (pred - true)^2) in metres;
    log10: mean |log10 pred - log10 true|. Predictions are clamped to >= 1 mm so ratios exist.
    """
    p = pred[valid].double().clamp_min(1e-3)
    t = target[valid].double()
    if t.numel() == 0:
        raise ValueError("no valid depth pixels to evaluate")
    ratio = torch.maximum(p / t, t / p)
    return {
        "delta1": float((ratio < 1.25).double().mean()),
        "delta2": float((ratio < 1.25**2).double().mean()),
        "delta3": float((ratio < 1.25**3).double().mean()),
        "abs_rel": float(((p - t).abs() / t).mean()),
        "rmse": float(((p - t) ** 2).mean().sqrt()),
        "log10": float((p.log10() - t.log10()).abs().mean()),
        "pixels": int(t.numel()),
    }


def angular_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) normals (any length) -> (N, H, W) angle between them in degrees."""
    cosine = torch.nn.functional.cosine_similarity(pred.double(), target.double(), dim=1)
    return torch.rad2deg(torch.arccos(cosine.clamp(-1.0, 1.0)))


def normal_metrics(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> dict:
    """(N, 3, H, W) predicted and true normals, (N, H, W) mask -> mean and median angular
    error (degrees) and the fraction of pixels within 11.25, 22.5 and 30 degrees."""
    angles = angular_error(pred, target)[valid]
    if angles.numel() == 0:
        raise ValueError("no valid normal pixels to evaluate")
    out = {"mean_deg": float(angles.mean()), "median_deg": float(angles.median())}
    for threshold in ANGLE_THRESHOLDS:
        out[f"within_{threshold:g}"] = float((angles < threshold).double().mean())
    out["pixels"] = int(angles.numel())
    return out


def mean_and_std(values: list[float]) -> dict:
    """{"mean", "std", "values"}; std is the sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "values": values}
