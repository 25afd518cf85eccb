"""The results pages of the probed benchmark entries: learning to count, the pretext tasks
and multi-task, transitive invariance."""

from __future__ import annotations

from pathlib import Path

from .pages import NOT_MEASURED, flatten, md_table
from .results_data import (
    COUNTING_ENTRIES,
    MULTITASK_ENTRIES,
    PAPER_COUNTING,
    TRANSITIVE_ENTRIES,
    accuracy_table,
    commands_block,
    measured_rows,
    paper_multitask_table,
    plots,
    probe_tables,
    run_facts,
)


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


def multitask_page(results: dict[str, dict], images: dict[str, bytes], folder: Path) -> str:
    parts = [
        "# Results: pretext tasks and multi-task",
        "Generated from `bench/results/mt_*.json` at every docs build. Each single task and "
        "the four-task combination (without lasso, with lasso, harmonized) pretrain the same "
        "trunk for the same budget on CIFAR-10 (the `multitask_small` preset), then are "
        "probed per layer like every other run. Motion segmentation reads the motion masks "
        "of the DAVIS clips. The `mt_balance_*` pair compares the four tasks' plain sum with "
        "their trunk gradients rescaled to one norm (`multitask.trunk_grad_norm`), for a "
        "shorter budget of its own.",
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
