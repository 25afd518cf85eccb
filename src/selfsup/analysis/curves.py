"""Training curves: every numeric quantity a run logged to metrics.jsonl, against the step."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt

from selfsup.analysis.page import Section

NOT_PLOTTED = ("step",)  # the x axis


def read_metrics(path: Path) -> list[dict]:
    """The JSON records of metrics.jsonl (blank or truncated last lines are skipped)."""
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed while writing leaves a partial line
    return [r for r in records if isinstance(r, dict) and "step" in r]


def numeric_keys(records: list[dict]) -> list[str]:
    """Keys with a number in any record, in first-logged order (loss first)."""
    keys: dict[str, None] = {}
    for record in records:
        for key, value in record.items():
            if (
                key not in NOT_PLOTTED
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                keys[key] = None
    return sorted(keys, key=lambda k: k != "loss")


def plot_curves(records: list[dict], keys: list[str], path: Path) -> None:
    """One small panel per key (their scales differ by orders of magnitude)."""
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 2.8 * rows), dpi=110, squeeze=False
    )
    flat = list(axes.flat)
    for ax, key in zip(flat, keys):
        points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float)]
        ax.plot(*zip(*points), marker="." if len(points) < 30 else None)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    for ax in flat[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def curves_section(run_dir: Path | None, out_dir: Path) -> Section:
    section = Section("curves", "Training curves")
    metrics = run_dir / "metrics.jsonl" if run_dir else None
    if metrics is None or not metrics.is_file():
        return section.text("No metrics.jsonl next to this checkpoint.", note=True)
    records = read_metrics(metrics)
    keys = numeric_keys(records)
    if not keys:
        return section.text("metrics.jsonl holds no numeric records yet.", note=True)
    plot_curves(records, keys, out_dir / "curves.png")
    last = records[-1]
    section.text(f"{len(records)} logged steps, the last at step {last['step']}.")
    section.figure("curves.png", f"Logged quantities against the step: {', '.join(keys)}.")
    return section
