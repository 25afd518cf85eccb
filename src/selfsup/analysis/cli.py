"""`selfsup inspect`: arguments and what it runs."""

from __future__ import annotations

import argparse

from selfsup.analysis.inspect_run import InspectSettings


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
    p.add_argument("run", metavar="RUN", help="run folder or checkpoint file")
    p.add_argument(
        "--data",
        help="images to analyse, folder or .npz (default: the run's training data; give "
        "held-out images to test the representation on data it has not seen)",
    )
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument(
        "--max-images",
        type=int,
        default=InspectSettings.max_images,
        help=f"analyse a random sample of at most this many images (default "
        f"{InspectSettings.max_images}; t-SNE and retrieval grow quadratically)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--workers", type=int, default=2, help="decoding processes (default 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def command_inspect(args: argparse.Namespace) -> None:
    from selfsup.analysis.inspect_run import inspect_run

    settings = InspectSettings(
        data=args.data,
        max_images=args.max_images,
        device=args.device,
        workers=args.workers,
        progress=not args.quiet,
    )
    page = inspect_run(args.run, args.out, settings)
    print(f"wrote {page}")
