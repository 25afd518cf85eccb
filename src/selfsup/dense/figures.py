"""Image grids of the dense evaluations: what a person checks before trusting a number."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import numpy as np
import torch

MAX_ANGLE_SHOWN = 60.0  # degrees: the error map saturates here
DRAWN_SIZE = 400  # px: detection images are enlarged towards this before boxes are drawn


def evenly_spaced(count: int, wanted: int) -> list[int]:
    return sorted({round(i * (count - 1) / max(1, wanted - 1)) for i in range(min(count, wanted))})


def masked(image: np.ndarray, valid: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_array(image, mask=~valid)


def normals_rgb(normals: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """(3, H, W) unit normals -> (H, W, 3) colours in [0, 1] ((n + 1) / 2), white if invalid."""
    image = ((normals.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)
    return np.where(valid.numpy()[..., None], image, 1.0)


def depth_row(axes, pred, target, valid) -> None:
    """Prediction, ground truth (invalid pixels blank) and |error| in metres."""
    shown = target[0][valid] if valid.any() else pred[0].flatten()
    low, high = np.percentile(shown.numpy(), [2, 98])
    axes[1].imshow(pred[0].numpy(), cmap="viridis", vmin=low, vmax=high)
    axes[2].imshow(masked(target[0].numpy(), valid.numpy()), cmap="viridis", vmin=low, vmax=high)
    error = (pred[0] - target[0]).abs().numpy()
    axes[3].imshow(masked(error, valid.numpy()), cmap="magma", vmin=0, vmax=max(high - low, 1e-3))


def normals_row(axes, pred, target, valid) -> None:
    """Predicted and true normals as colours, and the angle between them."""
    axes[1].imshow(normals_rgb(pred, torch.ones_like(valid)))
    axes[2].imshow(normals_rgb(target, valid))
    cosine = torch.nn.functional.cosine_similarity(pred, target, dim=0).clamp(-1, 1)
    angle = torch.rad2deg(torch.arccos(cosine)).numpy()
    axes[3].imshow(masked(angle, valid.numpy()), cmap="magma", vmin=0, vmax=MAX_ANGLE_SHOWN)


def depth_grid(frames, pred, target, valid, kind: str, path: Path, rows: int = 4) -> None:
    """Rows of test frames: input, prediction, ground truth, error map (blank = invalid)."""
    picked = evenly_spaced(len(frames), rows)
    height, width = frames.images.shape[-2:]
    fig, axes = plt.subplots(
        len(picked), 4, figsize=(4 * 2.4 * width / height, 2.4 * len(picked)), squeeze=False
    )
    error_title = "|error| (m)" if kind == "depth" else f"angle error (0-{MAX_ANGLE_SHOWN:g} deg)"
    titles = ("input", "prediction", "ground truth (white: invalid)", error_title)
    for column, title in enumerate(titles):
        axes[0, column].set_title(title, fontsize=9)
    draw_row = depth_row if kind == "depth" else normals_row
    for row, index in enumerate(picked):
        axes[row, 0].imshow(frames.images[index].permute(1, 2, 0).numpy())
        axes[row, 0].set_ylabel(f"frame {frames.indices[index]}", fontsize=8)
        draw_row(axes[row], pred[index], target[index], valid[index])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def detection_grid(
    images: list[torch.Tensor],
    predictions: list[dict],
    targets: list[dict],
    class_names: list[str],
    path: Path,
    top: int = 5,
) -> None:
    """Two columns per image: the `top` highest-scoring predictions (with their scores, so a
    weak detector still shows what it ranks first) and the ground truth."""
    from torchvision.utils import draw_bounding_boxes

    def drawn(image, boxes, labels, colour, scores=None):
        # Enlarged first, so label text stays legible on CPU-sized (~200 px) images.
        zoom = max(1, DRAWN_SIZE // max(image.shape[-2:]))
        image = torch.nn.functional.interpolate(image[None].float(), scale_factor=zoom)[0]
        image = image.to(torch.uint8)
        if len(boxes) == 0:
            return image
        names = [class_names[int(label)] for label in labels]
        if scores is not None:
            names = [f"{name} {score:.2f}" for name, score in zip(names, scores.tolist())]
        return draw_bounding_boxes(image, boxes * zoom, names, colors=colour, width=2)

    fig, axes = plt.subplots(len(images), 2, figsize=(8, 4 * len(images)), squeeze=False)
    axes[0, 0].set_title(f"top {top} predictions (score)", fontsize=9)
    axes[0, 1].set_title("ground truth", fontsize=9)
    for row, (image, pred, target) in enumerate(zip(images, predictions, targets)):
        keep = pred["scores"].argsort(descending=True)[:top]
        shown = drawn(image, pred["boxes"][keep], pred["labels"][keep], "red", pred["scores"][keep])
        axes[row, 0].imshow(shown.permute(1, 2, 0).numpy())
        truth = drawn(image, target["boxes"], target["labels"], "lime")
        axes[row, 1].imshow(truth.permute(1, 2, 0).numpy())
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
