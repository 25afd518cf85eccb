"""The results index, and every results page with its images."""

from __future__ import annotations

from pathlib import Path

from .pages import NOT_MEASURED, RESULTS, flatten, md_table, notes
from .probe_pages import counting_page, multitask_page, transitive_page
from .results_data import (
    COUNTING_ENTRIES,
    MULTITASK_ENTRIES,
    TOOL_ENTRIES,
    TRANSITIVE_ENTRIES,
    load_results,
    plots,
)
from .tool_pages import gpu_page, graph_page, learning_page, video_page


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
        "Every table on these pages is read from `bench/results/*.json` when the docs are "
        "built, so the pages show exactly what was last measured (and say so where nothing "
        "was). `make bench` runs every benchmark; each JSON records its commands and the "
        "machine. Data comes from `$SELFSUP_DATA` (see `bench/run.py`). The notes at the end "
        "of a page were written by hand when its runs were made.",
        md_table(["entry", "status", "command"], rows),
        "Pages: [counting](counting.md), [pretext tasks and multi-task](multitask.md), "
        "[transitive invariance](transitive.md), "
        "[video pipeline](video.md), [graph building cost](graph.md), "
        "[learning per CPU-minute](learning.md), [dense transfer](dense.md), "
        "[training speed](performance.md), [results at scale on a GPU](gpu.md).",
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


NOTED_PAGES = {
    "results/index.md": "index",
    "results/counting.md": "counting",
    "results/multitask.md": "multitask",
    "results/transitive.md": "transitive",
    "results/video.md": "video",
    "results/graph.md": "graph",
    "results/learning.md": "learning",
}


def notes_page(title: str, entry: str, command: str, folder: Path, reading: str = "") -> str:
    """A page made of its notes: the results whose JSON holds more than a table shows."""
    status = "measured" if (folder / f"{entry}.json").is_file() else NOT_MEASURED
    head = (
        f"# {title}\n\n`{command}` writes `bench/results/{entry}.json` ({status}), with the "
        "commands and the machine; [performance](../performance.md) describes the benchmark."
    )
    return head + "\n" + (notes(reading or entry, folder) or f"\n{NOT_MEASURED}.\n")


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
    pages["results/dense.md"] = notes_page(
        "Dense transfer", "dense", "python bench/dense.py", folder
    )
    pages["results/performance.md"] = notes_page(
        "Training speed", "perf", "python bench/perf.py", folder, "performance"
    )
    pages["results/index.md"] = results_index(results, images, folder)
    for page, name in NOTED_PAGES.items():
        pages[page] = str(pages[page]).rstrip("\n") + "\n" + notes(name, folder)
    pages.update(images)
    return pages
