"""The multi-task lasso: which residual units each task's head draws on.

Found by name, not by class, so any checkpoint whose state dict has a (tasks x units) tensor
named `...alpha` under a module path containing `lasso` gets the heat map, whichever task
code wrote it. Rows are tasks, columns units, colour |alpha| (the L1 penalty drives unused
entries to zero).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
import torch

from selfsup.analysis.page import Section


def find_lasso_alphas(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{name: (tasks, units) tensor} for every 2-D `*lasso*alpha` entry, each tensor once
    (a shared module appears in the state dict under several paths)."""
    found: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not (isinstance(value, torch.Tensor) and value.ndim == 2):
            continue
        path, _, leaf = name.rpartition(".")
        is_alpha = leaf.endswith("alpha") and "lasso" in path.lower() + leaf.lower()
        if is_alpha and not any(torch.equal(value, seen) for seen in found.values()):
            found[name] = value.detach().float().cpu()
    return found


def task_names(config: dict, rows: int) -> list[str]:
    """The multi-task config's task list when it has one name per row, else task 0..n-1."""
    tasks = config.get("multitask", {}).get("tasks")
    if isinstance(tasks, list) and len(tasks) == rows and all(isinstance(t, str) for t in tasks):
        return tasks
    return [f"task {i}" for i in range(rows)]


def plot_alpha(alpha: torch.Tensor, rows: list[str], title: str, path: Path) -> None:
    magnitude = alpha.abs().numpy()
    fig, ax = plt.subplots(
        figsize=(max(4.0, 0.35 * alpha.shape[1] + 2), 0.45 * alpha.shape[0] + 1.6), dpi=110
    )
    image = ax.imshow(magnitude, aspect="auto", cmap="magma")
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("residual unit")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="|alpha|")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def lasso_section(state: dict[str, torch.Tensor], config: dict, out_dir: Path) -> Section | None:
    """The heat map section, or None when the checkpoint has no lasso."""
    alphas = find_lasso_alphas(state)
    if not alphas:
        return None
    section = Section("lasso", "Lasso layer weights")
    for index, (name, alpha) in enumerate(alphas.items()):
        file_name = f"lasso_alpha_{index}.png"
        plot_alpha(alpha, task_names(config, alpha.shape[0]), name, out_dir / file_name)
        used = (alpha.abs() > 1e-3 * alpha.abs().max()).sum(dim=1).tolist()
        section.figure(
            file_name,
            f"{name}: |alpha| per task (rows) and residual unit (columns); units in use per "
            f"task: {used}.",
        )
    return section
