"""The documentation pages generated from the code and from measured results.

Nothing here is written by hand twice: the CLI reference comes from `selfsup.cli.build_parser()`,
the config reference from the config dataclasses (`selfsup.config.field_docs`), the results
pages from `bench/results/*.json` (and the PNG plots beside them), and each method page's
figure is drawn here with matplotlib.

Two ways to use it:

- as an MkDocs hook (`hooks:` in mkdocs.yml): every `mkdocs build` / `mkdocs serve` adds the
  generated pages to the site in memory (nothing is written into docs/), and replaces each
  `<!-- results: KEY -->` line of a hand-written page with the measured-vs-reported block of
  KEY, so the site cannot drift from the code or from what was measured;
- as a script, to look at the generated Markdown: `python tools/gen_docs.py --out DIR`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NOT_MEASURED = "not measured yet"

# ---------------------------------------------------------------------------------------------
# Small Markdown helpers
# ---------------------------------------------------------------------------------------------


def cell(text: Any) -> str:
    """A table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def md_table(header: list[str], rows: list[list[Any]], align: str = "") -> str:
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def yaml_value(value: Any) -> str:
    import yaml

    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("...")
        .strip()
    )


# ---------------------------------------------------------------------------------------------
# CLI reference
# ---------------------------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of every subcommand of `parser`, in definition order."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


def option_rows(parser: argparse.ArgumentParser) -> list[list[str]]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            name = ", ".join(f"`{s}`" for s in action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or action.dest.upper()
                name += f" `{metavar}`" + (" ..." if action.nargs in ("+", "*") else "")
        else:
            name = f"`{action.metavar or action.dest}`" + (
                " ..." if action.nargs in ("+", "*") else ""
            )
        notes = []
        if action.required and action.option_strings:
            notes.append("required")
        if action.choices is not None and not isinstance(action.choices, dict):
            notes.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
        default = action.default
        if action.option_strings and action.nargs != 0 and default not in (None, [], ""):
            shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else default
            notes.append(f"default `{shown}`")
        rows.append([name, action.help or "", "; ".join(notes)])
    return rows


@contextlib.contextmanager
def terminal_width(columns: int) -> Iterator[None]:
    """argparse wraps usage lines at $COLUMNS: fix it so the page does not depend on the shell."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def command_section(prog: str, parser: argparse.ArgumentParser, summary: str, level: int) -> str:
    parts = [f"{'#' * level} `{prog}`"]
    if summary:
        parts.append(summary[0].upper() + summary[1:] + ".")
    if parser.description and parser.description != summary:
        parts.append(parser.description)
    parts.append("```text\n" + parser.format_usage().strip() + "\n```")
    rows = option_rows(parser)
    if rows:
        parts.append(md_table(["argument", "help", "notes"], rows))
    if parser.epilog:
        parts.append("```text\n" + parser.epilog.strip() + "\n```")
    out = ["\n\n".join(parts)]
    for name, help_text, sub in subcommands(parser):
        out.append(command_section(f"{prog} {name}", sub, help_text, min(level + 1, 4)))
    return "\n\n".join(out)


def cli_reference() -> str:
    from selfsup.cli import build_parser

    with terminal_width(100):
        parser = build_parser()
        top = [
            "# Command line",
            "Generated from the argument parser (`selfsup.cli.build_parser()`) at every docs "
            "build; `selfsup COMMAND --help` prints the same. Arguments of the form "
            "`key=value` are config overrides (see [Configuration keys](config.md)).",
            md_table(
                ["command", "what it does"],
                [[f"[`selfsup {n}`](#selfsup-{n})", h] for n, h, _ in subcommands(parser)],
            ),
            "```text\n" + parser.format_help().strip() + "\n```",
        ]
        sections = [
            command_section(f"selfsup {name}", sub, help_text, 2)
            for name, help_text, sub in subcommands(parser)
        ]
    return "\n\n".join(top + sections) + "\n"


# ---------------------------------------------------------------------------------------------
# Config reference
# ---------------------------------------------------------------------------------------------


def field_metadata(cls: type, dotted: str) -> dict:
    """The `param` metadata (choices, bounds) of a dotted key of dataclass `cls`."""
    *parents, leaf = dotted.split(".")
    for part in parents:
        cls = type(getattr(cls(), part))
    return next(f.metadata for f in dataclasses.fields(cls) if f.name == leaf)


def constraint(meta: dict) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(f"`{c}`" for c in meta["choices"])
    if meta.get("low") is not None:
        return f"{'>' if meta.get('low_exclusive') else '>='} {meta['low']:g}"
    return ""


def config_table(cls: type, prefix: str = "") -> str:
    from selfsup.config import field_docs

    rows = []
    for key, type_name, default, help_text in field_docs(cls):
        allowed = constraint(field_metadata(cls, key))
        full = f"{prefix}.{key}" if prefix else key
        rows.append([f"`{full}`", type_name, f"`{yaml_value(default)}`", help_text, allowed])
    return md_table(["key", "type", "default", "help", "allowed"], rows)


def config_reference() -> str:
    from selfsup.config import ExperimentConfig, field_docs
    from selfsup.graph.build import GraphConfig
    from selfsup.tasks import get_task_class, list_tasks, task_config_class
    from selfsup.video.motion import MotionMaskConfig
    from selfsup.video.patches import PatchConfig

    parts = [
        "# Configuration keys",
        "Generated from the config dataclasses (`selfsup.config.field_docs`) at every docs "
        "build. A run's settings are resolved in three layers: these defaults, then a YAML "
        "file (`--config FILE`), then dotted `key=value` arguments; unknown keys, ill-typed "
        "and out-of-range values are errors that name the key. `selfsup config TASK` prints "
        "the resolved YAML with each key's help as a comment.",
        "## Every run",
        "Sections shared by all tasks. The task's own settings live in a section named after "
        "the task (below).",
    ]
    sections = list(dict.fromkeys(key.split(".")[0] for key, *_ in field_docs(ExperimentConfig)))
    for section in sections:
        value = getattr(ExperimentConfig(), section)
        parts.append(f"### `{section}`")
        if dataclasses.is_dataclass(value):
            parts.append(config_table(type(value), section))
        else:  # a top-level key (`task`)
            rows = [
                [f"`{k}`", t, f"`{yaml_value(d)}`", h, constraint(field_metadata(cls, k))]
                for cls in [ExperimentConfig]
                for k, t, d, h in field_docs(cls)
                if k == section
            ]
            parts.append(md_table(["key", "type", "default", "help", "allowed"], rows))
    parts.append("## Tasks")
    parts.append(
        "One section per task of `selfsup list tasks`, under the task's name (`counting.margin=5`)."
    )
    for name in list_tasks():
        doc = (sys.modules[get_task_class(name).__module__].__doc__ or "").strip()
        parts.append(f"### `{name}`")
        if doc:
            parts.append(doc.splitlines()[0])
        parts.append(config_table(task_config_class(name), name))
    parts.append("## Video and graph tools")
    parts.append(
        "These are `key=value` arguments of `selfsup video` and `selfsup graph build`, "
        "without a section prefix for `video masks`, with `masks.`, `proposals.` and `track.` "
        "for `video patches` and `video track`."
    )
    for title, cls in (
        ("`selfsup video masks`", MotionMaskConfig),
        ("`selfsup video patches`, `selfsup video track`", PatchConfig),
        ("`selfsup graph build`", GraphConfig),
    ):
        parts += [f"### {title}", config_table(cls)]
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------
# Results: bench/results/*.json
# ---------------------------------------------------------------------------------------------

# Entries the benchmark scripts write, and how to produce each (bench/run.py, video.py,
# graph.py). A JSON file not listed here is still shown, under "Other results".
COUNTING_ENTRIES = {
    "counting_cifar10": "python bench/run.py --only counting_cifar10",
    "counting_tinyimagenet": "python bench/run.py --only counting_tinyimagenet",
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
    for name in [*SINGLE_TASKS, "four_naive", "four_lasso", "four_harmonized"]
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


def probe_entry_section(
    name: str, data: dict, images: dict[str, bytes], how: str, folder: Path
) -> str:
    parts = [f"## `{name}`"]
    if "_error" in data:
        return "\n\n".join([*parts, f"`bench/results/{name}.json` {data['_error']}."])
    if "linear_probe" in data:
        parts.append(
            "!!! note\n    Recorded by an earlier version of `bench/run.py` (linear probes "
            "only, no baselines trained with labels); its commands may use options the "
            "current CLI no longer has. Rerun the command below to refresh it."
        )
    facts = run_facts(data)
    if facts:
        parts.append(facts)
    tables = probe_tables(data)
    titles = {
        "linear": "Linear probe, test top-1 (%) per layer",
        "knn": "Weighted kNN (k = 200, T = 0.1), test top-1 (%) per layer",
    }
    for protocol, models in tables.items():
        parts += [f"**{titles[protocol]}**", accuracy_table(models)]
    parts += plots(name, images, folder)
    block = commands_block(data)
    if block:
        parts.append(block)
    parts.append(f"Reproduce: `{how}`.")
    return "\n\n".join(parts)


def missing(name: str, how: str) -> str:
    note = f"{NOT_MEASURED.capitalize()}: run `{how}` (writes `bench/results/{name}.json`)."
    return f"## `{name}`\n\n{note}"


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


def counting_page(results: dict[str, dict], images: dict[str, bytes], folder: Path) -> str:
    parts = [
        "# Results: learning to count",
        "Generated from `bench/results/counting_*.json` at every docs build. Protocol: "
        "counting pretrained on the training images without labels, then a linear probe "
        "(L-BFGS, L2 chosen on a validation split) and a weighted kNN on the frozen features "
        "of every layer, beside the same architecture at random initialisation and trained "
        "with labels for the same budget. See [evaluation](../evaluation.md).",
        "## Reported by the paper",
        f"{PAPER_COUNTING['source']}, AlexNet on ImageNet at 228 px; linear probes on frozen "
        "conv1..conv5, ImageNet top-1 (%):",
        md_table(
            list(PAPER_COUNTING["linear"]),
            [list(PAPER_COUNTING["linear"].values())],
            "r" * len(PAPER_COUNTING["linear"]),
        ),
        md_table(["transfer", "reported"], [[k, v] for k, v in PAPER_COUNTING["transfer"].items()]),
        "These are the targets of the `counting_alexnet_imagenet` preset; the entries below "
        "are small-image runs (32-64 px) whose numbers are not comparable to them.",
    ]
    parts += entry_sections(COUNTING_ENTRIES, results, images, folder)
    return "\n\n".join(parts) + "\n"


def entry_sections(
    entries: dict[str, str], results: dict[str, dict], images: dict[str, bytes], folder: Path
) -> list[str]:
    """A section per benchmark entry: its tables and figures, or how to measure it."""
    return [
        probe_entry_section(name, results[name], images, how, folder)
        if name in results
        else missing(name, how)
        for name, how in entries.items()
    ]


def probe_summary(results: dict[str, dict], entries: dict[str, str]) -> str:
    """One row per entry: its best layer beside the best layer of each baseline."""
    rows = measured_rows(list(entries), results, link=True)
    return md_table(
        [
            "entry",
            "linear top-1 % (best layer)",
            "kNN top-1 %",
            "random init, linear",
            "supervised, linear",
        ],
        rows,
    )


def paper_multitask_table(keys: list[str] | None = None) -> str:
    keys = keys or list(PAPER_MULTITASK)
    rows = [[k, *PAPER_MULTITASK[k]] for k in keys]
    return md_table(["trained on", *PAPER_MULTITASK_COLUMNS], rows, "lrrr")


def multitask_page(results: dict[str, dict], images: dict[str, bytes], folder: Path) -> str:
    parts = [
        "# Results: pretext tasks and multi-task",
        "Generated from `bench/results/mt_*.json` at every docs build. Each single task and "
        "the four-task combination (without lasso, with lasso, harmonized) pretrain the same "
        "trunk for the same budget on CIFAR-10 (the `multitask_small` preset), then are "
        "probed per layer like every other run. Motion segmentation reads the motion masks "
        "of the DAVIS clips.",
        "## Summary",
        probe_summary(results, MULTITASK_ENTRIES),
        "## Reported by the paper",
        "Doersch & Zisserman (ICCV 2017), ResNet-101 trunk on ImageNet; other datasets, "
        "scale and metrics than the measurements above, so compare the ordering of methods, "
        "not the figures:",
        paper_multitask_table(),
        "Rotation and jigsaw are not part of that paper; no reported figures are recorded "
        "for them here.",
    ]
    parts += entry_sections(MULTITASK_ENTRIES, results, images, folder)
    return "\n\n".join(parts) + "\n"


def transitive_page(results: dict[str, dict], images: dict[str, bytes], folder: Path) -> str:
    how = "python bench/run.py --suite transitive"
    parts = [
        "# Results: transitive invariance",
        "Generated from `bench/results/ti_*.json` at every docs build. One graph is mined "
        "from the patches of the real videos (DAVIS clips and OpenCV's vtest, whose tracks "
        "give the intra-instance edges) and CIFAR-10 training images (each its own track, "
        "for enough inter-instance edges), embedded by the multitask suite's "
        "relative-position run. The three edge ablations then train the multitask suite's "
        "trunk for the same budget (the `transitive_small` preset) and are probed on the "
        "same CIFAR-10 protocol, beside the same baselines. See "
        "[transitive invariance](../methods/transitive.md).",
        "## Summary",
        probe_summary(results, TRANSITIVE_ENTRIES),
        "## The graph",
    ]
    graph = results.get("ti_graph")
    if graph is None:
        parts.append(f"{NOT_MEASURED.capitalize()}: run `{how}`.")
    else:
        rows = [[f"`{k}`", v] for k, v in flatten(graph.get("patches", {}))]
        rows += [[f"`{k}`", v] for k, v in flatten(graph.get("stats", {})) if k != "params"]
        rows.append(["build time (s)", graph.get("graph_seconds", "")])
        parts.append(md_table(["", "value"], rows))
        parts.append(
            "Label agreement: the share of a type's pairs whose two CIFAR-10 images have the "
            "same class (video patches have no class and are left out); cluster purity counts "
            "labelled images only."
        )
        block = commands_block(graph)
        if block:
            parts.append(block)
    parts += entry_sections(TRANSITIVE_ENTRIES, results, images, folder)
    return "\n\n".join(parts) + "\n"


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
            [f"`{v}`", r.get("J"), r.get("J_centre_box"), r.get("frames_per_s")]
            for v, r in per_video.items()
        ]
        rows.append(["**mean**", masks.get("mean_J"), masks.get("mean_J_centre_box"), ""])
        parts += [
            f"## Motion masks ({data.get('resolution', '')})",
            md_table(["video", "J", "J centre box", "frames / s"], rows, "lrrr"),
        ]
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


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list) and len(value) > 8:
        return [(prefix, f"[{len(value)} items]")]
    return [(prefix, value)]


def results_index(results: dict[str, dict], images: dict[str, bytes], folder: Path) -> str:
    known = {
        **COUNTING_ENTRIES,
        **MULTITASK_ENTRIES,
        **TRANSITIVE_ENTRIES,
        "ti_graph": "python bench/run.py --suite transitive",
        **TOOL_ENTRIES,
    }
    page = {name: "counting.md" for name in COUNTING_ENTRIES}
    page.update({name: "multitask.md" for name in MULTITASK_ENTRIES})
    page.update({name: "transitive.md" for name in [*TRANSITIVE_ENTRIES, "ti_graph"]})
    page.update({"video": "video.md", "graph": "graph.md", "learning": "learning.md"})
    page.update({"gpu": "gpu.md", "gpu_results": "gpu.md"})
    rows = [
        [f"[`{name}`]({page[name]})", "measured" if name in results else NOT_MEASURED, f"`{how}`"]
        for name, how in known.items()
    ]
    parts = [
        "# Results",
        "Every figure on these pages is read from `bench/results/*.json` when the docs are "
        "built; nothing is typed in by hand, so the pages show exactly what was last measured "
        "(and say so where nothing was). `make bench` runs every benchmark; each JSON records "
        "its commands and the machine. Data comes from `$SELFSUP_DATA` (see "
        "`bench/run.py`).",
        md_table(["entry", "status", "command"], rows),
        "Pages: [counting](counting.md), [pretext tasks and multi-task](multitask.md), "
        "[transitive invariance](transitive.md), "
        "[video pipeline](video.md), [graph building cost](graph.md), "
        "[learning per CPU-minute](learning.md), [results at scale on a GPU](gpu.md).",
    ]
    others = sorted(set(results) - set(known))
    if others:
        parts.append("## Other results")
        for name in others:
            parts.append(f"### `{name}`")
            rows = [[f"`{k}`", v] for k, v in flatten(results[name]) if k != "machine"]
            parts.append(md_table(["key", "value"], rows))
            parts += plots(name, images, folder)
    return "\n\n".join(parts) + "\n"


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


def results_pages(folder: Path = RESULTS) -> dict[str, str | bytes]:
    results = load_results(folder)
    images: dict[str, bytes] = {}
    pages: dict[str, str | bytes] = {
        "results/counting.md": counting_page(results, images, folder),
        "results/multitask.md": multitask_page(results, images, folder),
        "results/transitive.md": transitive_page(results, images, folder),
        "results/video.md": video_page(results, images, folder),
        "results/graph.md": graph_page(results, images, folder),
        "results/learning.md": learning_page(results, images, folder),
        "results/gpu.md": gpu_page(results, folder),
    }
    pages["results/index.md"] = results_index(results, images, folder)
    pages.update(images)
    return pages


# --- the results block of each method page (`<!-- results: KEY -->`) --------------------------

METHOD_ENTRIES = {
    "counting": list(COUNTING_ENTRIES),
    **{task: [f"mt_{task}"] for task in SINGLE_TASKS},
    "multitask": ["mt_four_naive", "mt_four_lasso", "mt_four_harmonized"],
    "transitive": [],
}


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


def results_block(key: str, results: dict[str, dict] | None = None) -> str:
    """Markdown for `<!-- results: KEY -->` on a method page (pages live in docs/methods/)."""
    results = load_results() if results is None else results
    parts = []
    if key == "counting":
        parts += [
            f"**Reported** ({PAPER_COUNTING['source']}; AlexNet, ImageNet, linear probes "
            "on frozen layers, top-1 %):",
            md_table(
                list(PAPER_COUNTING["linear"]),
                [list(PAPER_COUNTING["linear"].values())],
                "r" * len(PAPER_COUNTING["linear"]),
            ),
            "Transfer: "
            + "; ".join(f"{k} {v}" for k, v in PAPER_COUNTING["transfer"].items())
            + ".",
        ]
        page = "counting.md"
    elif key == "transitive":
        parts += [
            "**Reported** (Wang, He & Gupta, ICCV 2017):",
            md_table(["benchmark", "transitive invariance", "ImageNet labels"], PAPER_TRANSITIVE),
            "**Measured here**: no accuracy benchmark of transitive invariance is in `bench/` "
            f"yet ({NOT_MEASURED}). The cost of building the graph is on "
            "[graph building cost](../results/graph.md), the patch pipeline on "
            "[video pipeline](../results/video.md).",
        ]
        return "\n\n".join(parts)
    else:
        paper_keys = {"multitask": ["RP + Col + Ex + MS", "ImageNet labels"]}.get(
            key, [key] if key in PAPER_MULTITASK else []
        )
        if paper_keys:
            parts += [
                "**Reported** (Doersch & Zisserman, ICCV 2017; ResNet-101 on ImageNet):",
                paper_multitask_table(paper_keys),
            ]
        else:
            parts.append(
                "**Reported**: the multi-task paper does not include this task, and no "
                "published figures are recorded for it here."
            )
        page = "multitask.md"
    names = METHOD_ENTRIES[key]
    parts += [
        "**Measured here** (small-image benchmark; top-1 % on the test images, best layer):",
        md_table(
            ["entry", "linear (best layer)", "kNN", "random init, linear", "supervised, linear"],
            measured_rows(names, results),
        ),
        f"Tables per layer, plots and the exact commands: [results](../results/{page}). "
        "Reported and measured figures come from different data, scales and protocols: "
        "compare methods within one table, not across the two.",
    ]
    return "\n\n".join(parts)


RESULTS_MARK = re.compile(r"^<!-- results: ([\w-]+) -->$", re.MULTILINE)


def fill_results(markdown: str, results: dict[str, dict] | None = None) -> str:
    results = load_results() if results is None else results
    return RESULTS_MARK.sub(lambda m: results_block(m.group(1), results), markdown)


# ---------------------------------------------------------------------------------------------
# Figures: one schematic per method page, drawn from a bundled CIFAR-10 image
# ---------------------------------------------------------------------------------------------


def sample_image(index: int = 812) -> Any:
    """One image of the bundled CIFAR-10 test sample, (32, 32, 3) uint8."""
    import numpy as np
    from PIL import Image

    with np.load(ROOT / "src" / "selfsup" / "assets" / "cifar10_sample_test.npz") as data:
        lo, hi = data["offsets"][index], data["offsets"][index + 1]
        blob = data["jpeg"][lo:hi].tobytes()
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"))


def upscale(image: Any, factor: int) -> Any:
    return image.repeat(factor, 0).repeat(factor, 1)


def gray(image: Any) -> Any:
    import numpy as np

    luma = image @ np.array([0.299, 0.587, 0.114])
    return np.repeat(luma[..., None], 3, axis=2).astype(np.uint8)


def figure(width: float, height: float, columns: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=(width, height), dpi=100)
    for ax in axes:
        ax.set_axis_off()
    return fig, axes


def png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def fig_counting() -> bytes:
    x = sample_image()
    fig, axes = figure(9, 2.2, 6)
    axes[0].imshow(x, interpolation="nearest")
    axes[0].set_title("crop x (2s x 2s)")
    axes[1].imshow(x[::2, ::2], interpolation="nearest")
    axes[1].set_title("D(x) (s x s)")
    for j, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        axes[2 + j].imshow(x[r * 16 : r * 16 + 16, c * 16 : c * 16 + 16], interpolation="nearest")
        axes[2 + j].set_title(f"T{j + 1}(x)")
    fig.suptitle("phi(D x) = phi(T1 x) + phi(T2 x) + phi(T3 x) + phi(T4 x)", y=0.02)
    return png(fig)


def fig_grid(shuffle: bool) -> bytes:
    import matplotlib.patches as mpatches
    import numpy as np

    x = upscale(sample_image(), 4)  # 128 px
    size, gap = 34, 8
    fig, axes = figure(8, 3.2, 2)
    axes[0].imshow(x)
    cells = []
    for r in range(3):
        for c in range(3):
            top, left = 3 + r * (size + gap), 3 + c * (size + gap)
            cells.append((top, left))
            color = "tab:blue" if (r, c) == (1, 1) else "white"
            axes[0].add_patch(
                mpatches.Rectangle((left, top), size, size, fill=False, color=color, lw=2)
            )
    if not shuffle:
        axes[0].set_title("3x3 grid with gaps (jitter not drawn)")
        numbers = [0, 1, 2, 3, None, 4, 5, 6, 7]
        for (top, left), k in zip(cells, numbers):
            if k is not None:
                axes[0].text(left + 3, top + 12, str(k), color="yellow", fontsize=11)
        top, left = cells[2]
        axes[0].add_patch(
            mpatches.Rectangle((left, top), size, size, fill=False, color="tab:orange", lw=3)
        )
        centre, neighbour = cells[4], cells[2]
        pair = np.concatenate(
            [
                x[centre[0] : centre[0] + size, centre[1] : centre[1] + size],
                np.full((size, 6, 3), 255, np.uint8),
                x[neighbour[0] : neighbour[0] + size, neighbour[1] : neighbour[1] + size],
            ],
            axis=1,
        )
        axes[1].imshow(pair)
        axes[1].set_title("input: (centre, neighbour)  ->  class k = 2")
    else:
        axes[0].set_title("3x3 tiles with gaps (jitter not drawn)")
        order = [7, 2, 4, 0, 8, 1, 6, 3, 5]  # an illustrative permutation
        tiles = [x[t : t + size, le : le + size] for t, le in cells]
        canvas = np.full((3 * size + 2 * 4, 3 * size + 2 * 4, 3), 255, np.uint8)
        step = size + 4
        for i, src in enumerate(order):
            r, c = divmod(i, 3)
            canvas[r * step : r * step + size, c * step : c * step + size] = tiles[src]
        axes[1].imshow(canvas)
        for i, src in enumerate(order):
            r, c = divmod(i, 3)
            axes[1].text(c * (size + 4) + 3, r * (size + 4) + 12, str(src), color="yellow")
        axes[1].set_title("shuffled by permutation P_y  ->  class y")
    return png(fig)


def fig_colorization() -> bytes:
    import torch

    from selfsup.data import views as V
    from selfsup.tasks.colorization import ab_bins

    x = upscale(sample_image(), 2)
    bins = ab_bins()
    lab = torch.cat([torch.full((len(bins), 1), 60.0), bins], dim=1)
    colours = V.lab_to_rgb(lab.T[None, :, :, None])[0, :, :, 0].T.clamp(0, 1).numpy()
    fig, axes = figure(10.5, 2.8, 3)
    axes[0].imshow(gray(x))
    axes[0].set_title("input: lightness L")
    axes[1].set_axis_on()
    axes[1].scatter(bins[:, 0], bins[:, 1], c=colours, marker="s", s=18)
    axes[1].set_xlabel("a")
    axes[1].set_ylabel("b")
    axes[1].set_title(f"{len(bins)} in-gamut ab bins (grid 10)")
    axes[1].set_aspect("equal")
    axes[2].imshow(x)
    axes[2].set_title("target: ab of each pixel (soft bins)")
    return png(fig)


def fig_exemplar() -> bytes:
    import numpy as np

    x = upscale(sample_image(), 2)
    other, third = upscale(sample_image(300), 2), upscale(sample_image(650), 2)
    view1 = x[8:56, 4:52]
    view2 = np.clip(x[:, ::-1][16:64, 10:58] * 1.3, 0, 255).astype(np.uint8)
    fig, axes = figure(8, 2.4, 4)
    for ax, im, title in zip(
        axes,
        [view1, view2, gray(other[8:56, 8:56]), third[0:48, 16:64]],
        ["anchor (view 1)", "positive (view 2)", "negative", "negative"],
    ):
        ax.imshow(im)
        ax.set_title(title)
    fig.suptitle("d(anchor, positive) + M < d(anchor, negative), d = 1 - cos", y=0.02)
    return png(fig)


def fig_motion() -> bytes:
    import numpy as np

    background = upscale(sample_image(300), 2)
    obj = upscale(sample_image(), 1)[4:28, 4:28]
    frames, masks = [], []
    for t in range(3):
        frame = np.roll(background, t, axis=1).copy()  # the camera pans slowly
        mask = np.zeros(frame.shape[:2], np.uint8)
        top, left = 20, 6 + 12 * t  # the object moves faster than the camera
        frame[top : top + 24, left : left + 24] = obj
        mask[top : top + 24, left : left + 24] = 255
        frames.append(frame)
        masks.append(mask)
    fig, axes = figure(9, 2.4, 4)
    for t in range(3):
        axes[t].imshow(frames[t])
        axes[t].set_title(f"frame t{t - 1:+d}" if t != 1 else "frame t")
    axes[3].imshow(masks[1], cmap="gray")
    axes[3].set_title("target: moving pixels of t")
    fig.suptitle("flow minus camera motion (homography), thresholded -> mask", y=0.02)
    return png(fig)


def fig_rotation() -> bytes:
    import numpy as np

    x = sample_image()
    fig, axes = figure(7, 2.0, 4)
    for k in range(4):
        axes[k].imshow(np.rot90(x, k), interpolation="nearest")
        axes[k].set_title(f"k = {k} ({90 * k} deg)")
    return png(fig)


def box(ax, xy: tuple[float, float], text: str, color: str, w: float = 1.6, h: float = 0.7):
    import matplotlib.patches as mpatches

    ax.add_patch(
        mpatches.FancyBboxPatch(xy, w, h, boxstyle="round,pad=0.05", fc=color, ec="black", lw=1)
    )
    ax.text(xy[0] + w / 2, xy[1] + h / 2, text, ha="center", va="center", fontsize=9)


def arrow(ax, start: tuple[float, float], end: tuple[float, float], style: str = "-") -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "ls": style, "lw": 1})


def fig_multitask() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 3.8), dpi=100)
    ax.set_xlim(0, 12.6)
    ax.set_ylim(-0.5, 5)
    ax.set_axis_off()
    box(ax, (0.1, 2.1), "image", "#eeeeee", 1.0)
    arrow(ax, (1.15, 2.45), (1.5, 2.45))
    outputs = []
    for i in range(4):
        x = 1.5 + i * 1.35
        box(ax, (x, 2.1), f"unit {i + 1}", "#cfe2f3", 1.1)
        if i:
            arrow(ax, (x - 0.2, 2.45), (x, 2.45))
        outputs.append((x + 0.55, 2.1))
    ax.text(3.5, 1.2, "shared trunk: the residual units of one stage", ha="center", fontsize=9)
    tasks = ["relative position", "colorization", "exemplar", "motion seg."]
    for t, name in enumerate(tasks):
        y = 4.3 - t * 1.3
        box(ax, (7.4, y), r"BN-ReLU($\sum_u \alpha_{t,u}\,$unit$_u$)", "#fff2cc", 2.6, 0.6)
        box(ax, (10.6, y), name, "#d9ead3", 1.8, 0.6)
        for ox, oy in outputs:
            ax.plot([ox, 7.4], [oy + 0.7, y + 0.3], color="grey", lw=0.5, zorder=0)
        arrow(ax, (10.1, y + 0.3), (10.6, y + 0.3))
    ax.text(
        6.3,
        -0.4,
        r"$L = \sum_t w_t L_t + \lambda \|\alpha\|_1$: the L1 penalty makes each row of "
        r"$\alpha$ sparse",
        ha="center",
    )
    return png(fig)


def fig_transitive() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4), dpi=100)
    ax.set_xlim(-0.5, 6.5)
    ax.set_ylim(-0.6, 3.2)
    ax.set_axis_off()
    nodes = {"A": (0.5, 2.5), "A'": (0.5, 0.3), "B": (5.5, 2.5), "B'": (5.5, 0.3)}
    for name, (x, y) in nodes.items():
        ax.add_patch(plt.Circle((x, y), 0.35, fc="#cfe2f3", ec="black"))
        ax.text(x, y, name, ha="center", va="center", fontsize=12)

    def edge(a: str, b: str, style: str, color: str, label: str) -> None:
        (x0, y0), (x1, y1) = nodes[a], nodes[b]
        ax.plot([x0, x1], [y0, y1], ls=style, color=color, lw=2, zorder=0)
        ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.12, label, ha="center", fontsize=9, color=color)

    edge("A", "B", "--", "tab:orange", "inter (4-clique)")
    edge("A", "A'", "-", "tab:blue", "")
    edge("B", "B'", "-", "tab:blue", "")
    ax.text(0.95, 1.4, "intra\n(track)", color="tab:blue", fontsize=9)
    ax.text(4.3, 1.4, "intra\n(track)", color="tab:blue", fontsize=9)
    edge("A", "B'", ":", "tab:green", "")
    edge("A'", "B", ":", "tab:green", "")
    edge("A'", "B'", ":", "tab:green", "transitive")
    return png(fig)


FIGURES = {
    "counting": fig_counting,
    "relative-position": lambda: fig_grid(shuffle=False),
    "jigsaw": lambda: fig_grid(shuffle=True),
    "colorization": fig_colorization,
    "exemplar": fig_exemplar,
    "motion-segmentation": fig_motion,
    "rotation": fig_rotation,
    "multitask": fig_multitask,
    "transitive": fig_transitive,
}


def figures() -> dict[str, bytes]:
    return {f"methods/img/{name}.png": draw() for name, draw in FIGURES.items()}


# ---------------------------------------------------------------------------------------------
# Everything, and the MkDocs hooks
# ---------------------------------------------------------------------------------------------


def generated_pages() -> dict[str, str | bytes]:
    """Site path (relative to docs/) -> content of every generated file."""
    return {
        "reference/cli.md": cli_reference(),
        "reference/config.md": config_reference(),
        **results_pages(),
        **figures(),
    }


def on_files(files, config):  # MkDocs hook
    from mkdocs.structure.files import File

    for path, content in generated_pages().items():
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown, page, config, files):  # MkDocs hook
    return fill_results(markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the generated documentation pages.")
    parser.add_argument("--out", type=Path, required=True, help="folder to write them into")
    args = parser.parse_args()
    for path, content in generated_pages().items():
        target = args.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
