"""`selfsup inspect`: arguments and what it runs."""

from __future__ import annotations

import argparse

from selfsup.analysis.settings import InspectSettings
from selfsup.arguments import non_negative_int, positive_int
from selfsup.outputs import output_folder


def add_inspect_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "inspect",
        help="HTML report of what a run learned (curves, retrieval, feature map, task views)",
        description="Write DIR/report.html with PNGs beside it: training curves from "
        "metrics.jsonl, nearest-neighbour retrieval, a 2-D feature map (t-SNE with "
        "scikit-learn, else PCA) and, for counting runs, active units, counting-vector norms "
        "and the equivariance error against a random-init model; for multi-task runs with a "
        "lasso, its alpha heat map.",
    )
    p.add_argument(
        "run",
        metavar="RUN",
        help="run folder or checkpoint file; or a graph (what `selfsup graph build --out` was "
        "given), which gives a page of sample cliques and transitive chains",
    )
    p.add_argument(
        "--data",
        help="images to analyse, folder or .npz (default: the run's training data; give "
        "held-out images to test the representation on data it has not seen)",
    )
    p.add_argument("--out", required=True, type=output_folder, help="report folder")
    p.add_argument(
        "--max-images",
        type=positive_int,
        default=InspectSettings.max_images,
        help=f"analyse a random sample of at most this many images (default "
        f"{InspectSettings.max_images}; t-SNE and retrieval grow quadratically)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--workers", type=non_negative_int, default=2, help="decoding processes (default 2)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def inspect_graph(graph_path: str, patches_path: str | None, out: str) -> str:
    """Sample cliques and transitive chains of a graph, with its statistics, as a page."""
    import html
    import json
    from pathlib import Path

    from selfsup.data.patch_graph import load_graph, load_patches
    from selfsup.graph.build import graph_stats
    from selfsup.graph.preview import save_previews

    graph = load_graph(graph_path)
    patches = load_patches(patches_path or str(graph["patches_path"]))
    graph = load_graph(graph_path, patches)  # now checked against the patches
    folder = Path(out)
    images = save_previews(graph, patches, folder)
    stats = graph_stats(graph, patches.labels)
    captions = {
        "cliques.jpg": "Sample 4-cliques (one per row): inter-instance edges.",
        "chains.jpg": "Transitive chains A, B, B': A ~ B inter-instance, B ~ B' by tracking.",
    }
    body = "".join(
        f"<h2>{captions[p.name]}</h2><img src='{p.name}' alt='{p.name}'>" for p in images
    )
    page = folder / "report.html"
    page.write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>graph</title></head><body>"
        f"<h1>Graph {html.escape(Path(graph_path).name)}</h1>"
        f"<pre>{html.escape(json.dumps(stats, indent=2))}</pre>{body}</body></html>"
    )
    return str(page)


def command_inspect(args: argparse.Namespace) -> None:
    from selfsup.analysis.inspect_run import inspect_run
    from selfsup.data.patch_graph import find_graph
    from selfsup.outputs import nothing_half_written

    graph = find_graph(args.run)
    if graph is not None:
        with nothing_half_written(args.out):
            print(f"wrote {inspect_graph(str(graph), args.data, args.out)}")
        return

    settings = InspectSettings(
        data=args.data,
        max_images=args.max_images,
        device=args.device,
        workers=args.workers,
        progress=not args.quiet,
    )
    with nothing_half_written(args.out):
        page = inspect_run(args.run, args.out, settings)
    print(f"wrote {page}")
