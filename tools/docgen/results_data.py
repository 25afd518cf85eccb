"""What the results pages read: the entries the benchmark scripts write, the papers'
published figures, `bench/results/*.json`, and what one entry's data becomes (tables of probe
accuracy, the run's facts, its commands and plots)."""

from __future__ import annotations

import json
from pathlib import Path

from .pages import NOT_MEASURED, RESULTS, md_table

# Entries the benchmark scripts write, and how to produce each (bench/run.py, video.py,
# graph.py). A JSON file not listed here is still shown, under "Other results".
COUNTING_ENTRIES = {
    "counting_cifar10": "python bench/run.py --only counting_cifar10",
    "counting_tinyimagenet": "python bench/run.py --only counting_tinyimagenet",
    "counting_tinyimagenet_fp32": "python bench/run.py --only counting_tinyimagenet_fp32",
    "counting_tinyimagenet_fp32_seed1": (
        "python bench/run.py --only counting_tinyimagenet_fp32_seed1"
    ),
}
SINGLE_TASKS = [
    "relative-position",
    "colorization",
    "exemplar",
    "motion-segmentation",
    "rotation",
    "jigsaw",
]
MULTITASK_ENTRIES = {
    f"mt_{name}": f"python bench/run.py --suite multitask --only mt_{name}"
    for name in [
        *SINGLE_TASKS,
        "four_naive",
        "four_lasso",
        "four_harmonized",
        "balance_plain",
        "balance_normalized",
    ]
}
TRANSITIVE_ENTRIES = {
    f"ti_{edges}": f"python bench/run.py --suite transitive --only ti_{edges}"
    for edges in ("inter", "intra", "transitive")
}
TOOL_ENTRIES = {
    "video": "python bench/video.py",
    "graph": "python bench/graph.py",
    "learning": "python bench/learning.py",
    "gpu": "python bench/gpu.py",
    "gpu_results": "python bench/gpu_results.py",
}

# The papers' published figures, as recorded in the project's design notes (DESIGN.md). They
# are targets at paper scale (ImageNet, AlexNet / ResNet-101), not numbers measured here.
PAPER_COUNTING = {
    "source": "Noroozi, Pirsiavash & Favaro, ICCV 2017",
    "linear": {"conv1": 18.0, "conv2": 30.6, "conv3": 34.3, "conv4": 32.5, "conv5": 25.7},
    "transfer": {
        "VOC07 classification (mAP)": 67.7,
        "VOC07 detection (mAP)": 51.4,
        "VOC12 segmentation (mIoU)": 36.6,
    },
}
PAPER_MULTITASK = {
    # ImageNet linear top-5 / VOC07 detection mAP / NYU depth % pixels with ratio < 1.25
    "relative-position": (59.2, 66.8, 80.6),
    "colorization": (62.5, 65.5, 76.8),
    "exemplar": (53.1, 60.9, 69.6),
    "motion-segmentation": (48.3, 61.1, 74.2),
    "RP + Col + Ex + MS": (69.3, 70.5, 79.3),
    "ImageNet labels": (85.1, 74.2, 80.1),
}
PAPER_MULTITASK_COLUMNS = [
    "ImageNet linear top-5",
    "VOC07 detection mAP",
    "NYU depth % (ratio < 1.25)",
]
PAPER_TRANSITIVE = [
    ["VOC07 detection (Fast R-CNN, VGG16), mAP", 63.2, 67.3],
    ["COCO detection (Faster R-CNN), mAP", 23.5, 24.4],
]


def load_results(folder: Path = RESULTS) -> dict[str, dict]:
    """Every `*.json` of the results folder by name; unreadable files become an error note."""
    out: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            data = {"_error": f"could not be read ({err.__class__.__name__})"}
        out[path.stem] = data if isinstance(data, dict) else {"_value": data}
    return out


def probe_tables(data: dict) -> dict[str, dict[str, dict[str, float]]]:
    """{protocol: {model: {layer: top-1 fraction}}} from either schema bench/run.py has used."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for protocol in ("linear", "knn"):
        table = data.get(protocol)
        if isinstance(table, dict):
            out[protocol] = {
                model: {
                    layer: float(v) for layer, v in layers.items() if isinstance(v, int | float)
                }
                for model, layers in table.items()
                if isinstance(layers, dict)
            }
    old = data.get("linear_probe")  # earlier schema: {model: {layer: {"top1": ...}}}
    if isinstance(old, dict) and "linear" not in out:
        out["linear"] = {
            model.replace("_", " "): {
                layer: float(row["top1"])
                for layer, row in layers.items()
                if isinstance(row, dict) and "top1" in row
            }
            for model, layers in old.items()
            if isinstance(layers, dict)
        }
    return {k: v for k, v in out.items() if v}


def accuracy_table(models: dict[str, dict[str, float]]) -> str:
    layers = list(dict.fromkeys(layer for row in models.values() for layer in row))
    rows = [
        [f"`{model}`", *(f"{100 * row[la]:.1f}" if la in row else "" for la in layers)]
        for model, row in models.items()
    ]
    return md_table(["model", *layers], rows, "l" + "r" * len(layers))


def run_facts(data: dict) -> str:
    seconds = data.get("seconds")
    train_s = seconds.get("train") if isinstance(seconds, dict) else data.get("train_seconds")
    machine = data.get("machine") or {}
    facts = [
        ("pretraining steps", data.get("steps")),
        ("pretraining time (s)", train_s),
        ("images / s (median)", data.get("images_per_sec")),
        ("final loss", data.get("final_loss")),
        ("linear probes on cached features (s)", data.get("probe_seconds_on_cached_features")),
        (
            "machine",
            ", ".join(
                f"{k} {machine[k]}"
                for k in ("cpus", "threads", "cpu_capability", "torch", "gpu")
                if machine.get(k) not in (None, "")
            ),
        ),
    ]
    rows = [[k, f"{v:.4g}" if isinstance(v, float) else v] for k, v in facts if v not in (None, "")]
    return md_table(["", "value"], rows) if rows else ""


def commands_block(data: dict) -> str:
    commands = data.get("commands")
    if isinstance(commands, dict) and commands:
        lines = [f"# {k}\n{v}" for k, v in commands.items()]
        return "Recorded commands:\n\n```text\n" + "\n".join(lines) + "\n```"
    if isinstance(data.get("command"), str):
        return "Recorded command:\n\n```text\n" + data["command"] + "\n```"
    return ""


def plots(name: str, images: dict[str, bytes], folder: Path) -> list[str]:
    """Copy the PNGs under bench/results/<name>/ into the site; Markdown image lines."""
    lines = []
    base = folder / name
    for png in sorted(base.rglob("*.png")) if base.is_dir() else []:
        rel = png.relative_to(base).as_posix()
        images[f"results/img/{name}/{rel}"] = png.read_bytes()
        lines.append(f"![{name}: {rel}](img/{name}/{rel})")
    return lines


def best_layer(models: dict[str, dict[str, float]], prefix: str = "") -> tuple[str, float] | None:
    """The best layer of the pretrained model (the first row that is not a baseline)."""
    for model, row in models.items():
        if not model.startswith(("random", "supervised")) and row:
            layer = max(row, key=row.get)
            return layer, row[layer]
    return None


def baseline(models: dict[str, dict[str, float]], kind: str) -> tuple[str, float] | None:
    for model, row in models.items():
        if model.startswith(kind) and row:
            layer = max(row, key=row.get)
            return layer, row[layer]
    return None


def fmt_best(found: tuple[str, float] | None) -> str:
    return f"{100 * found[1]:.1f} ({found[0]})" if found else ""


def paper_multitask_table(keys: list[str] | None = None) -> str:
    keys = keys or list(PAPER_MULTITASK)
    rows = [[k, *PAPER_MULTITASK[k]] for k in keys]
    return md_table(["trained on", *PAPER_MULTITASK_COLUMNS], rows, "lrrr")


def measured_rows(
    names: list[str], results: dict[str, dict], link: bool = False
) -> list[list[str]]:
    """Per entry: best linear layer, kNN, and the best layers of random init and supervised.
    `link` points each name at its section on the same page."""
    rows = []
    for name in names:
        data = results.get(name)
        if data is None:
            rows.append([f"`{name}`", NOT_MEASURED, "", "", ""])
            continue
        tables = probe_tables(data)
        linear, knn = tables.get("linear", {}), tables.get("knn", {})
        rows.append(
            [
                f"[`{name}`](#{name.lower()})" if link else f"`{name}`",
                fmt_best(best_layer(linear)),
                fmt_best(best_layer(knn)),
                fmt_best(baseline(linear, "random")),
                fmt_best(baseline(linear, "supervised")),
            ]
        )
    return rows
