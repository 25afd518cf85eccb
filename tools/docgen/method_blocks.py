"""The results block of each method page: the line `<!-- results: KEY -->` becomes the
paper's reported figures beside the measured ones (pages live in docs/methods/)."""

from __future__ import annotations

import re

from .pages import NOT_MEASURED, md_table
from .results_data import (
    COUNTING_ENTRIES,
    PAPER_COUNTING,
    PAPER_MULTITASK,
    PAPER_TRANSITIVE,
    SINGLE_TASKS,
    load_results,
    measured_rows,
    paper_multitask_table,
)

METHOD_ENTRIES = {
    "counting": list(COUNTING_ENTRIES),
    **{task: [f"mt_{task}"] for task in SINGLE_TASKS},
    "multitask": [
        "mt_four_naive",
        "mt_four_lasso",
        "mt_four_harmonized",
        "mt_balance_plain",
        "mt_balance_normalized",
    ],
    "transitive": [],
}


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
