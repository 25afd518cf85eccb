"""The results pages of the other benchmarks: the video pipeline, graph building cost,
learning per CPU-minute and results at scale on a GPU."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from .pages import NOT_MEASURED, ROOT, flatten, md_table
from .results_data import TOOL_ENTRIES, commands_block, plots, run_facts


def video_page(results: dict[str, dict], images: dict[str, bytes], folder: Path) -> str:
    how = TOOL_ENTRIES["video"]
    parts = [
        "# Results: video pipeline",
        "Generated from `bench/results/video.json` at every docs build: unsupervised motion "
        "masks scored against the DAVIS 2016 ground truth (region similarity J, beside a "
        "centred box covering the middle half of the frame), tracking seeded by the true box, "
        "and the throughput of the patch pipeline. See [the video pipeline](../video.md).",
    ]
    data = results.get("video")
    if data is None or "_error" in data:
        note = data["_error"] if data else ""
        parts.append(
            f"{NOT_MEASURED.capitalize()}{': ' + note if note else ''}: run `{how}` "
            "(writes `bench/results/video.json`)."
        )
        return "\n\n".join(parts) + "\n"
    masks = data.get("motion_masks", {})
    per_video = masks.get("per_video", {})
    if per_video:
        rows = [
            [f"`{v}`", r.get("J"), r.get("J_residual", ""), r.get("J_centre_box"),
             r.get("frames_per_s")]
            for v, r in per_video.items()
        ]  # fmt: skip
        rows.append(
            ["**mean**", masks.get("mean_J"), masks.get("mean_J_residual", ""),
             masks.get("mean_J_centre_box"), masks.get("mean_frames_per_s", "")]
        )  # fmt: skip
        header = ["video", "J", "J residual (earlier)", "J centre box", "frames / s"]
        parts += [
            f"## Motion masks ({data.get('resolution', '')})",
            md_table(header, rows, "lrrrr"),
        ]
    parts += stress_tables(data.get("stress", {}))
    tracking = data.get("tracking", {})
    if tracking:
        seeded = [
            ["mean IoU along the track", tracking.get("mean_iou_seeded_by_truth")],
            ["mean survival (share of frames)", tracking.get("mean_survival_seeded_by_truth")],
        ]
        parts += ["## Tracking", md_table(["seeded by the true box", "value"], seeded)]
        rows = []
        for video, r in tracking.get("per_video", {}).items():
            ft, pr = r.get("from_truth") or {}, r.get("proposals") or {}
            rows.append(
                [
                    f"`{video}`",
                    ft.get("mean_iou", ""),
                    ft.get("survival", ""),
                    f"{pr.get('on_object', '')}/{pr.get('tracks', '')}",
                    pr.get("mean_iou", ""),
                    pr.get("mean_length", ""),
                ]
            )
        if rows:
            header = ["video", "IoU (truth seed)", "survival", "proposals on object"]
            header += ["proposal IoU", "length"]
            parts.append(md_table(header, rows, "lrrrrr"))
    patches = data.get("patches", {})
    if patches:
        parts += [
            "## Patch pipeline",
            md_table(["", "value"], [[k, v] for k, v in patches.items()]),
        ]
    facts = run_facts(data)
    if facts:
        parts += ["## Machine", facts]
    parts += plots("video", images, folder)
    block = commands_block(data)
    if block:
        parts.append(block)
    parts.append(f"Reproduce: `{how}`.")
    return "\n\n".join(parts) + "\n"


STRESS_SETS = {
    "followed": "followed (the camera pans with the object)",
    "half_resolution": "half resolution (slow motion)",
    "fast": "every second frame (fast motion)",
    "compressed": "through a video codec (mp4v, default quality)",
    "walkers": "walkers at a fixed camera (vtest, pseudo-truth)",
}


def stress_tables(stress: dict) -> list[str]:
    """The masks on clips made harder (docs/video.md): mean J per set, and the share of
    frames left empty where nothing moves."""
    rows = [
        [label, stress[name].get("mean_J"), stress[name].get("mean_J_residual", ""),
         stress[name].get("mean_J_centre_box"),
         round(min(r["J"] - r["J_centre_box"] for r in stress[name]["per_video"].values()), 3)]
        for name, label in STRESS_SETS.items() if name in stress
    ]  # fmt: skip
    parts = []
    if rows:
        header = ["stress set (the clips made harder)", "mean J", "J residual", "J centre box"]
        header.append("worst clip's J - its centre box")
        parts += ["## Stress sets", md_table(header, rows, "lrrrr")]
    still = stress.get("static_scene")
    if still:
        rows = [
            [method, r["empty_frames"], r["mean_area"], r["largest_area"], r["frames_per_s"]]
            for method, r in still.items()
        ]
        clip = next(iter(still.values()))
        parts.append(
            f"Nothing moves in `{clip['clip']}` ({clip['frames']} frames of a hand-held camera "
            "in a still room): the right mask is empty in every frame."
        )
        header = ["method", "frames left empty", "mean share masked", "largest", "frames / s"]
        parts.append(md_table(header, rows, "lrrrr"))
    return parts


def tool_page(
    name: str,
    title: str,
    intro: str,
    table: Callable[[dict], list[str]],
    results: dict[str, dict],
    images: dict[str, bytes],
    folder: Path,
) -> str:
    """A results page for a tool's `bench/results/<name>.json` with `rows`: its title and
    intro, what `table` makes of the data, the run's facts, plots and commands."""
    how = TOOL_ENTRIES[name]
    parts = [f"# Results: {title}", intro]
    data = results.get(name)
    if data is None or "_error" in data or not data.get("rows"):
        parts.append(
            f"{NOT_MEASURED.capitalize()}: run `{how}` (writes `bench/results/{name}.json`)."
        )
        return "\n\n".join(parts) + "\n"
    parts += table(data)
    facts = run_facts(data)
    if facts:
        parts.append(facts)
    parts += plots(name, images, folder)
    block = commands_block(data)
    if block:
        parts.append(block)
    return "\n\n".join(parts) + "\n"


def graph_table(data: dict) -> list[str]:
    rows = data["rows"]
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [md_table(keys, [[row.get(k, "") for k in keys] for row in rows], "r" * len(keys))]


def graph_page(results: dict[str, dict], images: dict[str, bytes], folder: Path) -> str:
    intro = (
        "Generated from `bench/results/graph.json` at every docs build: spherical k-means, "
        "within-cluster 10-nearest-neighbour search and 4-clique mining on random 128-d "
        "vectors, each size in a fresh process (peak memory is its own). See "
        "[transitive invariance](../methods/transitive.md)."
    )
    return tool_page("graph", "graph building cost", intro, graph_table, results, images, folder)


def backbone_text(backbone: dict | None) -> str:
    """`resnet18, width 0.5, 3 stages`; the peer's model has no config of ours."""
    if not backbone:
        return "torchvision resnet18"
    if backbone["name"].startswith("resnet"):
        return f"{backbone['name']}, width {backbone['width']:g}, {backbone['num_stages']} stages"
    return backbone["name"]


def learning_table(data: dict) -> list[str]:
    header = ["contender", "kind", "backbone", "batch", "steps", "CPU-s", "images", "kNN top-1"]
    rows = [
        [
            row.get("label") or row["name"],
            row["kind"],
            backbone_text(row.get("backbone")),
            row.get("batch", ""),
            row["steps"],
            row["cpu_seconds"],
            row.get("images", 0),
            f"{row['knn_top1']:.1f} %",
        ]
        for row in sorted(data["rows"].values(), key=lambda r: -r["knn_top1"])
    ]
    budget = f"Budget: {data['budget_cpu_seconds']:g} CPU-seconds per contender."
    return [budget, md_table(header, rows, "lllrrrrr")]


def learning_page(results: dict[str, dict], images: dict[str, bytes], folder: Path) -> str:
    intro = (
        "Generated from `bench/results/learning.json` at every docs build: every pretext task, "
        "LightlySSL's SimCLR and the untrained backbones after the same CPU budget of training "
        "(one thread each), then CIFAR-10 kNN on the pooled final layer. See "
        "[performance](../performance.md#learning-per-cpu-minute)."
    )
    title = "learning per CPU-minute"
    return tool_page("learning", title, intro, learning_table, results, images, folder)


def gpu_page(results: dict[str, dict], folder: Path) -> str:
    """Results at scale (bench/gpu_results.py's own table, every row measured or not) and
    the GPU benchmark's throughput (bench/gpu.py)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_results import load_results as load_rows
    from gpu_results import table

    parts = [table(load_rows(folder / "gpu_results.json")).rstrip()]
    parts.append("## Throughput on one GPU (`python bench/gpu.py`)")
    throughput = results.get("gpu")
    if not throughput:
        parts.append(f"{NOT_MEASURED}: `python bench/gpu.py` writes `bench/results/gpu.json`.")
    else:
        rows = [[f"`{k}`", v] for k, v in flatten(throughput) if k != "machine"]
        parts.append(md_table(["key", "value"], rows))
    return "\n\n".join(parts) + "\n"
