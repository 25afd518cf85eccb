"""What a counting network learned (Noroozi et al. 2017).

For each image x (brought to the task's crop size 2s), phi(D x) is the counting vector of its
s x s downsampled version and phi(T_j x) those of its four s x s tiles, the same views as in
training but without random augmentation (D is a 2x2 area average here). Reported:

- how many of the k units are ever non-zero (the paper saw about 30 of 1000 on ImageNet),
  and how often each unit fires;
- the images with the largest and smallest counting-vector norm |phi(D x)|;
- the equivariance error |phi(D x) - sum_j phi(T_j x)| against the distance to another
  image's counts |phi(D y) - sum_j phi(T_j x)|, for the trained model and a randomly
  initialised one of the same architecture. Their ratio is the informative number: a network
  with all-zero outputs is perfectly "equivariant", but cannot tell images apart either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import torch
from tqdm import tqdm

from selfsup.analysis.grids import save_grid
from selfsup.analysis.page import Section
from selfsup.data import views as V
from selfsup.data.views import MEAN, STD
from selfsup.tasks.counting import Counting

GRID_IMAGES = 16  # images in each of the highest / lowest norm grids


@dataclass
class CountingStats:
    """Per-image and per-unit measurements of one counting model on N images."""

    name: str
    counts: torch.Tensor  # (N, k) phi(D x)
    equivariance: torch.Tensor  # (N,) |phi(D x) - sum_j phi(T_j x)|
    contrast: torch.Tensor  # (N,) |phi(D y) - sum_j phi(T_j x)|, y the next image

    @property
    def active_units(self) -> int:
        return int((self.counts > 0).any(dim=0).sum())

    @property
    def unit_activity(self) -> torch.Tensor:
        """(k,) share of images on which each unit is non-zero."""
        return (self.counts > 0).float().mean(dim=0)

    @property
    def norms(self) -> torch.Tensor:
        return self.counts.norm(dim=1)


def counting_views(images: torch.Tensor, crop_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) uint8 -> normalised D x (B, 3, s, s) and tiles (B, 4, 3, s, s)."""
    x = V.to_float(images)
    if x.shape[-1] != crop_size:
        # OpenCV's advice: area to shrink (it low-passes; its Lanczos does not), cubic to grow.
        x = V.resize(x, crop_size, "area" if x.shape[-1] > crop_size else "bicubic")
    down = V.resize(x, crop_size // 2, "area")
    tiles = V.tiles_2x2(x)
    return V.normalize(down, MEAN, STD), V.normalize(tiles.flatten(0, 1), MEAN, STD).view(
        tiles.shape
    )


@torch.no_grad()
def counting_stats(
    model: Counting,
    images: torch.Tensor,
    name: str,
    device: torch.device,
    batch_size: int = 128,
    progress: bool = True,
) -> CountingStats:
    model.eval().to(device)
    counts, tile_sums = [], []
    starts = range(0, len(images), batch_size)
    bar = tqdm(starts, desc=f"counting {name}", unit="batch", disable=not progress, leave=False)
    for start in bar:
        down, tiles = counting_views(images[start : start + batch_size], model.config.crop_size)
        batch = len(down)
        phi = model.phi(torch.cat([tiles.flatten(0, 1), down]).to(device)).float().cpu()
        counts.append(phi[4 * batch :])  # (B, k)
        tile_sums.append(phi[: 4 * batch].view(batch, 4, -1).sum(dim=1))  # (B, k)
    down_counts, tile_sum = torch.cat(counts), torch.cat(tile_sums)
    other = down_counts.roll(1, dims=0)  # the previous image's counts: y != x
    return CountingStats(
        name, down_counts, (down_counts - tile_sum).norm(dim=1), (other - tile_sum).norm(dim=1)
    )


def plot_activity(stats: list[CountingStats], path: Path) -> None:
    """Histogram over units of the share of images on which the unit fires."""
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    bins = torch.linspace(0, 1, 21).tolist()
    for s in stats:
        ax.hist(s.unit_activity.numpy(), bins=bins, alpha=0.6, label=s.name)
    ax.set_yscale("log")
    ax.set_xlabel("share of images on which a unit is non-zero")
    ax.set_ylabel("units")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_errors(stats: list[CountingStats], path: Path) -> None:
    """Per-image equivariance error relative to the distance to another image's counts."""
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    for s in stats:
        ratio = s.equivariance / s.contrast.clamp_min(1e-12)
        ax.hist(ratio.clamp(max=3).numpy(), bins=40, alpha=0.6, label=s.name)
    ax.set_xlabel("|phi(Dx) - sum phi(T x)| / |phi(Dy) - sum phi(T x)|  (clipped at 3)")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_row(s: CountingStats) -> list[object]:
    ratio = (s.equivariance.mean() / s.contrast.mean().clamp_min(1e-12)).item()
    k = s.counts.shape[1]
    return [
        s.name,
        f"{s.active_units} / {k}",
        s.norms.mean().item(),
        s.equivariance.mean().item(),
        s.contrast.mean().item(),
        ratio,
    ]


def counting_section(
    trained: CountingStats, random: CountingStats, images: torch.Tensor, data_note: str, out: Path
) -> Section:
    section = Section("counting", "Counting")
    section.text(
        f"Counting vectors phi(D x) of {len(images)} images ({data_note}); D is a 2x2 area "
        "average, T_j the four tiles; y is another image of the set."
    )
    section.table(
        [
            "model",
            "units ever non-zero",
            "mean |phi(Dx)|",
            "mean |phi(Dx) - sum phi(Tx)|",
            "mean |phi(Dy) - sum phi(Tx)|",
            "error / distance",
        ],
        [summary_row(trained), summary_row(random)],
    )
    plot_activity([trained, random], out / "counting_activity.png")
    section.figure("counting_activity.png", "How often each of the k units fires.")
    plot_errors([trained, random], out / "counting_equivariance.png")
    section.figure(
        "counting_equivariance.png",
        "Equivariance error relative to the distance to another image's counts, per image: "
        "below 1 means the counts of an image's tiles add up to its own counts more closely "
        "than to another image's.",
    )
    order = trained.norms.argsort(descending=True)
    count = min(GRID_IMAGES, len(order))
    for label, rows in (("highest", order[:count]), ("lowest", order.flip(0)[:count])):
        file_name = f"counting_{label}_norm.png"
        save_grid(list(images[rows].split(8)), out / file_name)
        norms = trained.norms[rows]
        section.figure(
            file_name,
            f"The {count} images with the {label} |phi(D x)| "
            f"({norms.max().item():.3g} to {norms.min().item():.3g}).",
        )
    return section
