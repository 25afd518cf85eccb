"""Results at scale: every method pretrained on a GPU through one protocol, one table.

    python bench/gpu_results.py --list                 # the rows, measured or not
    python bench/gpu_results.py --prepare counting     # inputs of these rows -> bench/work
    python bench/gpu_results.py counting rotation      # run rows not yet measured
    python bench/gpu_results.py --table                # print the table (the docs show it too)
    python bench/gpu_results.py --quick counting random-alexnet_small   # tiny, on a CPU
    python bench/gpu_results.py --parallel 4 --deadline 540 rotation jigsaw colorization exemplar

The rows and the papers' claims they test are data, in bench/gpu_results.yaml. A row is one
`selfsup train` run (its `epochs`, or `--minutes` sized from a 40-step trial run), then kNN
(k = 200, T = 0.1) on the final layer and a linear probe on every layer, on the full test set,
appended to bench/results/gpu_results.json (rows already there are skipped).
docs/performance.md ("Results at scale") describes the budgets and every option.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # nothing installed

import numpy as np
from harness import record as rec
from harness import rows as rowdata
from harness.data import VIDEOS, carry, data_root
from harness.record import selfsup
from harness.rows import CLAIMS, ROWS, graph_set, train_argv
from harness.runner import finish, run_all

from selfsup.arguments import positive_int

INPUTS = rec.WORK / "gpu_results_inputs"
RUNS = rec.WORK / "gpu_results"
# Seconds a budgeted row needs beyond its training minutes (process starts, trial run, masks,
# kNN and probes): rows are not started when less than that is left before --deadline.
ROW_OVERHEAD_SECONDS = 150
# Rows running at once take turns to make what they would otherwise make twice over: the
# carved Tiny ImageNet split, the transitive patch graph.
SPLITTING, GRAPHING = threading.Lock(), threading.Lock()


def prepare(names: list[str], graphs: list[Path]) -> None:
    """Write the inputs of rows `names` (xz-compressed packed JPEGs, video folders, the
    video patches of their graphs; `graphs`, graphs an earlier run kept) to INPUTS, refusing
    a set that would not travel with the repository in 64 MiB."""
    shutil.rmtree(INPUTS, ignore_errors=True)
    for masks in sorted({ROWS[name].masks for name in names if ROWS[name].graph}):
        rowdata.video_patches(rec.data_dir(), INPUTS / graph_set(masks), masks)
    for graph in graphs:
        target = INPUTS / graph.name.removesuffix("-graph.npz") / "graph.npz"
        if not target.parent.is_dir():
            sys.exit(f"--graph {graph}: none of these rows trains on {target.parent.name}")
        shutil.copyfile(graph, target)
    files = {f for name in names for f in rowdata.SOURCES[ROWS[name].data].values()}
    files |= {VIDEOS for name in names if ROWS[name].videos}
    files = {relative: rec.data_dir() / relative for relative in sorted(files)}
    carry(files, INPUTS, f"inputs of {len(names)} rows")


def planned_steps(row: rowdata.Row, paths: dict[str, Path], trial: Path, args) -> int:
    """The row's schedule for --minutes, its settings and --extra (harness.rows.planned_steps)."""
    return rowdata.planned_steps(row, paths, trial, args.minutes, args.extra)


def transitive_graph(root: Path, args, masks: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """(patches, graph) of the transitive rows whose video patches come from masks made with
    `masks`, made once per machine (harness.rows.patch_graph), embedded by the
    relative-position row's run when it ran here, else by one trained for the shared budget."""
    folder = RUNS / f"{graph_set(masks)}_graph"

    def embedder() -> Path:
        if (RUNS / "relative-position" / "checkpoints" / "last.pt").is_file():
            return RUNS / "relative-position"
        row = ROWS["relative-position"]
        paths = rowdata.data_paths(row, root)
        steps = args.steps or planned_steps(row, paths, folder / "trial", args)
        selfsup(*train_argv(row, paths, folder / "embedder", steps, args.extra))
        return folder / "embedder"

    if not (folder / "graph.npz").is_file():
        rowdata.patch_graph(root, folder, embedder, masks)
    return folder / "patches.npz", folder / "graph.npz"


def inputs(name: str, root: Path, args) -> dict[str, Path]:
    """What the row (or the row whose architecture it leaves untrained) reads: its data, the
    patch graph, and the motion masks of its videos made with its mask settings."""
    row = ROWS[ROWS[name].random_of or name]
    with SPLITTING:  # made once, by the first row that needs it
        paths = rowdata.data_paths(row, root)
    if row.graph:
        with GRAPHING:
            paths["patches"], paths["graph"] = transitive_graph(root, args, row.masks)
    if row.videos and row.masks:
        masks = RUNS / f"{name}_masks"
        shutil.rmtree(masks, ignore_errors=True)  # a rerun on this machine makes them afresh
        selfsup("video", "masks", str(paths["videos"]), "--out", str(masks), *row.masks)
        paths["videos"] = masks
    return paths


def run_row(name: str, root: Path, args) -> dict:
    """Train row `name` (a random-init row: one step, to build its architecture), evaluate it
    and return its line of the results file."""
    import torch

    row, folder = ROWS[name], RUNS / name
    paths = inputs(name, root, args)
    shutil.rmtree(folder, ignore_errors=True)
    steps = 1 if row.random_of else args.steps
    steps = steps or planned_steps(row, paths, RUNS / f"{name}_trial", args)
    argv = train_argv(ROWS[row.random_of or name], paths, folder, steps, args.extra)
    train_seconds = selfsup(*argv)
    trained = {"train_command": None, "steps": 0, "train_seconds": None, "peak_memory_gib": None}
    epochs = 0.0
    if not row.random_of:  # trained here, not an untrained architecture
        with np.load(paths["train"]) as archive:
            epochs = steps * rowdata.batch_of(folder) / len(archive["labels"])
        trained = {
            "train_command": rec.portable(["selfsup", *argv]),
            "steps": steps,
            "train_seconds": round(train_seconds, 1),
            "peak_memory_gib": rowdata.metrics(folder)[-1].get("max_memory_gib"),
        }
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {
        "label": row.label,
        "data": row.data,
        **trained,
        **evaluate(folder, paths, random_init=bool(row.random_of), probe=args.probe),
        "date": time.strftime("%Y-%m-%d"),
        "device": device,
        "concurrent": args.parallel,  # rows sharing the GPU while this one ran (at most)
        "epochs": round(epochs, 2),
    }


def evaluate(folder: Path, paths: dict[str, Path], random_init: bool, probe: list[str]) -> dict:
    """kNN on the final layer and linear probes on every layer, on the test set; `probe`:
    extra `eval linear` options."""
    common = ["--data", str(paths["train"]), "--test", str(paths["test"]), "--no-cache"]
    common += ["--random-init"] if random_init else []
    found, seconds = {}, 0.0
    for protocol, options in (("knn", []), ("linear", probe)):
        out = folder / protocol
        seconds += selfsup("eval", protocol, str(folder), *common, *options, "--json", str(out))
        found[protocol] = json.loads(out.with_suffix(".json").read_text())
        if isinstance(found[protocol], list):  # a list when it holds several models
            found[protocol] = found[protocol][0]
    knn, linear = found["knn"], found["linear"]
    return {
        "knn_top1": round(100 * knn["layers"][-1]["top1"], 2),
        "knn_layer": knn["layers"][-1]["layer"],
        "linear_top1": {
            layer["layer"]: round(100 * layer["top1"], 2) for layer in linear["layers"]
        },
        "eval_seconds": round(seconds, 1),
        "num_train": knn["num_train"],
        "num_test": knn["num_test"],
    }


def run_rows(names: list[str], root: Path, args, results: dict) -> list[str]:
    """Run rows `names`, up to --parallel at once, each saved to the results file as it ends;
    a budgeted row that could not end before --deadline is not started, and a transitive row
    waits for the relative-position row, whose run embeds its graph. The rows that failed."""
    started = time.monotonic()
    embedded = threading.Event()
    if "relative-position" not in names:
        embedded.set()

    def start(name: str) -> dict | None:
        row = ROWS[name]
        if row.graph:
            embedded.wait()
        try:
            left = args.deadline - (time.monotonic() - started) if args.deadline else np.inf
            budgeted = not (row.random_of or row.epochs or args.steps)  # sized by --minutes
            if budgeted and left < args.minutes * 60 + ROW_OVERHEAD_SECONDS:
                rec.say(f"{name}: {left:.0f} s left before --deadline, not started")
                return None
            rec.say(f"{name}: running")
            return run_row(name, root, args)
        finally:
            if name == "relative-position":
                embedded.set()

    def save(name: str, result: dict) -> None:
        if "error" not in result:
            results["rows"][name] = result
            rec.write_json(args.results, results)
            rec.say(f"{name}: kNN {result['knn_top1']:.1f} %")

    return run_all(names, start, save, args.parallel)


def keep_graphs(root: Path, args) -> None:
    """Build the graph of every graph row's patch set (with this run's relative-position
    row, when it ran) and write each to --keep-graph DIR as `<set>-graph.npz`, for the
    transitive rows of a later run on a bare machine."""
    args.keep_graph.mkdir(parents=True, exist_ok=True)
    for masks in sorted({row.masks for row in ROWS.values() if row.graph}):
        target = args.keep_graph / f"{graph_set(masks)}-graph.npz"
        shutil.copyfile(transitive_graph(root, args, masks)[1], target)
        print(f"transitive graph kept in {target}")


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"rows": {}}


def claims(rows: dict) -> list[tuple[str, str]]:
    """Each paper's own claim at this scale, and its verdict on the rows measured so far:
    confirmed, not confirmed (with the figures) or not yet measured, as the claim's `compare`
    reads the linear probes of its row against each of its `against` rows."""

    def best(name: str) -> float:
        return max(rows[name]["linear_top1"].values())

    def verdict(claim: dict) -> str:
        if not all(name in rows for name in [claim["row"], *claim["against"]]):
            return "not yet measured"
        if claim["compare"] == "every_layer":
            below = [
                layer for layer, top1 in rows[claim["row"]]["linear_top1"].items()
                if any(top1 <= rows[other]["linear_top1"].get(layer, 0)
                       for other in claim["against"])
            ]  # fmt: skip
            return f"not confirmed: at or below on {', '.join(below)}" if below else "confirmed"
        other = max(claim["against"], key=best)
        margin = best(claim["row"]) - best(other)
        verdict = "confirmed" if margin > 0 else "not confirmed"
        return f"{verdict}: {margin:+.2f} points against {other}"

    return [(claim["claim"], verdict(claim)) for claim in CLAIMS]


def table(results: dict) -> str:
    """The results page: every row, measured or not, then the claims and the commands."""
    lines = [
        "# Results at scale (GPU)",
        "",
        "Generated from `bench/results/gpu_results.json` (`python bench/gpu_results.py`).",
        "Every row: one `selfsup train` run, then kNN (k = 200, T = 0.1) on the final layer and",
        "linear probes on every layer, scored on the full test set. Protocol and budgets: the",
        'docstring of `bench/gpu_results.py`. "K at once": the row shared the GPU with up to',
        "K - 1 others (`--parallel K`), its training minutes are wall-clock beside them.",
        "",
        "| row | data | kNN top-1 | best linear (layer) | epochs | train min | peak GiB | GPU "
        "| date |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, row in ROWS.items():
        measured = results["rows"].get(name)
        if not measured:
            lines.append(f"| {row.label} | {row.data} | not yet measured | | | | | | |")
            continue
        layer = max(measured["linear_top1"], key=measured["linear_top1"].get)
        minutes = measured["train_seconds"] and round(measured["train_seconds"] / 60, 1)
        shared = measured.get("concurrent", 1)
        minutes = f"{minutes} ({shared} at once)" if minutes and shared > 1 else minutes
        lines.append(
            f"| {row.label} | {row.data} | {measured['knn_top1']:.1f} | "
            f"{measured['linear_top1'][layer]:.1f} ({layer}) | {measured['epochs']} | "
            f"{minutes or '—'} | {measured['peak_memory_gib'] or '—'} | {measured['device']} | "
            f"{measured['date']} |"
        )
    lines += ["", "## The papers' claims at this scale", ""]
    lines += [f"- {claim}: **{verdict}**" for claim, verdict in claims(results["rows"])]
    commands = [
        f"- {name}: `{measured['train_command']}`"
        for name, measured in results["rows"].items()
        if measured.get("train_command")
    ]
    lines += ["", "## Commands", "", *(commands or ["None yet: no row has been measured."])]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = rec.parser(__doc__, "--quick", "--steps", "--results", "--deadline")
    p.add_argument("rows", nargs="*", help="rows to run (default: every row not measured)")
    p.add_argument("--list", action="store_true", help="print the rows and their state")
    p.add_argument("--prepare", action="store_true", help="write the rows' inputs")
    p.add_argument("--table", action="store_true", help="print the table, run nothing")
    p.add_argument("--minutes", type=float, default=6.0, help="training minutes a row")
    p.add_argument("--parallel", type=positive_int, default=1, metavar="K", help="rows at once")
    p.add_argument(
        "--keep-graph", type=Path, metavar="DIR",
        help="after the rows, write the transitive rows' graphs (built with this run's "
        "relative-position row when it ran) to DIR",
    )  # fmt: skip
    p.add_argument(
        "--graph", type=Path, metavar="FILE", action="append", default=[],
        help="with --prepare: carry this kept graph (a <set>-graph.npz that --keep-graph "
        "wrote) for the transitive rows; repeatable",
    )  # fmt: skip
    args = p.parse_args(argv)
    for graph in args.graph:
        if not graph.is_file() or not graph.name.endswith("-graph.npz"):
            p.error(f"--graph {graph}: not a <set>-graph.npz file that --keep-graph wrote")
    unknown = [name for name in args.rows if name not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; see --list")
    args.probe, args.extra = [], ()
    if args.quick:
        args.steps = args.steps or 2
        # The quick data holds 256 images: fewer than the SimCLR rows' batch of 512.
        args.extra = ("data.batch_size=16",)
        # One L2 strength and a few L-BFGS iterations: the probe's code runs, not its search.
        args.probe = ["--weight-decay", "0.01", "--steps", "10"]
    args.results = rec.results_file("gpu_results", args.quick, args.results)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.parallel > 1:  # the CPU's threads shared out, not oversubscribed K times
        rec.CHILD_ENV.update(rec.thread_caps(max(1, (os.cpu_count() or 1) // args.parallel)))
    results = load_results(args.results)
    names = args.rows or list(ROWS)
    if args.list:
        for name, row in ROWS.items():
            state = "measured" if name in results["rows"] else "to run"
            print(f"{name:28s} {row.data:13s} {state}")
        return
    if args.prepare:
        prepare(names, args.graph)
        return
    failed = []
    if not args.table:
        root = data_root(INPUTS, args.quick)
        for name in filter(results["rows"].__contains__, names):
            print(f"{name}: measured {results['rows'][name]['date']}, skipped")
        # In the table's order: the relative-position row starts before the transitive rows,
        # whose patch graph its run embeds.
        todo = [name for name in ROWS if name in names and name not in results["rows"]]
        failed = run_rows(todo, root, args, results)
        if args.keep_graph:
            try:
                keep_graphs(root, args)
            except Exception as error:  # the rows are saved: still show the table
                failed.append(f"--keep-graph ({error})")
    print(table(results))
    finish(failed, "rows")


if __name__ == "__main__":
    main()
