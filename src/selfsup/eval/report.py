"""Reports: one table (method x layer), one plot of accuracy per layer, the JSON behind them."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt


def table(results: list[dict], metric: str = "top1") -> str:
    """Markdown: a row per model, a column per layer, accuracy in %."""
    layers = list(dict.fromkeys(row["layer"] for r in results for row in r["layers"]))
    lines = [
        "| model | protocol | " + " | ".join(layers) + " |",
        "|---|---|" + "---:|" * len(layers),
    ]
    for result in results:
        by_layer = {row["layer"]: row for row in result["layers"]}
        cells = [
            f"{100 * by_layer[layer][metric]:.1f}" if layer in by_layer else "" for layer in layers
        ]
        lines.append(f"| {result['model']} | {result['protocol']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, metric: str = "top1") -> None:
    """Accuracy per layer, one line per model (x: layers in the order they first appear)."""
    layers = list(dict.fromkeys(row["layer"] for r in results for row in r["layers"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(layers) + 2), 3.8), dpi=120)
    for result in results:
        rows = [row for row in result["layers"] if row["layer"] in layers]
        xs = [layers.index(row["layer"]) for row in rows]
        ys = [100 * row[metric] for row in rows]
        style = "--" if result["model"].startswith(("random:", "supervised:")) else "-"
        ax.plot(xs, ys, style, marker="o", label=f"{result['model']} ({result['protocol']})")
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right")
    ax.set_ylabel(f"test {metric.replace('top', 'top-')} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(results: list[dict], out_dir: str | Path, title: str = "selfsup report") -> str:
    """Write report.md, accuracy.png and results.json into `out_dir`; returns the Markdown."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(results, out_dir / "accuracy.png")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    data = sorted({(r.get("train_data", ""), r.get("test_data", "")) for r in results})
    markdown = "\n\n".join(
        [
            f"# {title}",
            "Top-1 accuracy (%) on the test set, per layer:",
            table(results),
            "Top-5 accuracy (%):",
            table(results, "top5"),
            "Data (train -> test): " + "; ".join(f"{a} -> {b}" for a, b in data),
            "![accuracy per layer](accuracy.png)",
        ]
    )
    (out_dir / "report.md").write_text(markdown + "\n")
    return markdown
