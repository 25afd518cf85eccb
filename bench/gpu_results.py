"""Results at scale: every method pretrained on a GPU through one protocol, one table.

    python bench/gpu_results.py --list                 # the rows, measured or not
    python bench/gpu_results.py --prepare counting     # inputs of these rows -> bench/work
    python bench/gpu_results.py counting rotation      # run rows not yet measured
    python bench/gpu_results.py --table                # print the table (the docs show it too)
    python bench/gpu_results.py --quick counting random-alexnet_small   # tiny, on a CPU
    python bench/gpu_results.py --parallel 4 --deadline 540 rotation jigsaw colorization exemplar

The rows (what each trains, on which data, for how long) and the papers' claims they test
are data, in bench/gpu_results.yaml. A row is one `selfsup train` run of at most 9 minutes on
one GPU (its `epochs`, or `--minutes` of training sized from a 40-step trial run), then the
same evaluation for every method: weighted kNN (k = 200, T = 0.1) on the final layer with the
training images as the memory bank, and a linear probe on every layer, on the full test set.
Rows are appended to bench/results/gpu_results.json as they end; rows already there are
skipped. docs/performance.md ("Results at scale") describes the budgets, `--parallel` and
`--deadline`, the transitive rows' patch graph (`--keep-graph`, `--prepare --graph`) and how
`--prepare` fits a run's inputs in 64 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # nothing installed

import numpy as np
import yaml
from harness.data import (
    QUICK_DATA,
    VIDEOS,
    carry,
    carve_validation,
    check_travels,
    data_root,
    merge_patches,
    patch_commands,
)
from harness.record import RESULTS, ROOT, WORK, data_dir, portable, write_json

RESULTS_FILE = RESULTS / "gpu_results.json"
INPUTS = WORK / "gpu_results_inputs"
RUNS = WORK / "gpu_results"
# Seconds a budgeted row needs beyond its training minutes (process starts, trial run, masks,
# kNN and probes): rows are not started when less than that is left before --deadline.
ROW_OVERHEAD_SECONDS = 150
# Rows running at once take turns to make what they would otherwise make twice over: the
# carved Tiny ImageNet split, the transitive patch graph.
SPLITTING, GRAPHING = threading.Lock(), threading.Lock()
# Environment of every child process: selfsup importable from this checkout on a machine
# where nothing is installed (the GPU machine); main sets threads per row for --parallel.
CHILD_ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p
    ),
}
SOURCES = {
    "cifar10": {"train": "cifar10/train_jpeg.npz", "test": "cifar10/test_jpeg.npz"},
    # Tiny ImageNet's labelled test split is not staged: the last 50 training images of each
    # class are carved off as the test set (bench/run.py does the same).
    "tinyimagenet": {"train": "tinyimagenet/train_jpeg.npz"},
}
TINY_TEST_PER_CLASS = 50


@dataclass(frozen=True)
class Row:
    """One line of the table, as bench/gpu_results.yaml describes it."""

    label: str
    data: str = "cifar10"
    train: tuple[str, ...] = ()
    random_of: str | None = None
    epochs: float | None = None
    videos: bool = False
    masks: tuple[str, ...] = ()
    graph: bool = False


def load_table(path: Path) -> tuple[dict[str, Row], list[dict]]:
    """The rows (their `@group` arguments spelled out) and the claims of a rows file."""
    spec = yaml.safe_load(path.read_text())

    def spelled(args: list[str]) -> tuple[str, ...]:
        out: list[str] = []
        for arg in args:
            out += spelled(spec["groups"][arg[1:]]) if arg.startswith("@") else [arg]
        return tuple(out)

    rows = {}
    for name, row in spec["rows"].items():
        lists = {key: spelled(row.get(key, [])) for key in ("train", "masks")}
        rows[name] = Row(**{**row, **lists})
    return rows, spec["claims"]


ROWS, CLAIMS = load_table(Path(__file__).with_suffix(".yaml"))


# ---------------------------------------------------------------------------------------------
# Data: what each row reads, prepared to travel
# ---------------------------------------------------------------------------------------------


def graph_set(masks: tuple[str, ...]) -> str:
    """The name of the patch graph mined with mask settings `masks`: its folder in the
    inputs and on the GPU machine, and its file when kept (`<name>-graph.npz`)."""
    return "-".join(["transitive", *(setting.split("=", 1)[1] for setting in masks)])


def prepare(names: list[str], graphs: list[Path]) -> None:
    """Write the inputs of rows `names` (xz-compressed packed JPEGs, video folders, the
    video patches of their graphs; `graphs`, graphs an earlier run kept) to INPUTS, refusing
    a set that would not travel with the repository in 64 MiB."""
    shutil.rmtree(INPUTS, ignore_errors=True)
    for masks in sorted({ROWS[name].masks for name in names if ROWS[name].graph}):
        video_patches(data_dir(), INPUTS / graph_set(masks), masks)
    for graph in graphs:
        target = INPUTS / graph.name.removesuffix("-graph.npz") / "graph.npz"
        if not target.parent.is_dir():
            sys.exit(f"--graph {graph}: none of these rows trains on {target.parent.name}")
        shutil.copyfile(graph, target)
    files = {f for name in names for f in SOURCES[ROWS[name].data].values()}
    files |= {VIDEOS for name in names if ROWS[name].videos}
    carry({relative: data_dir() / relative for relative in sorted(files)}, INPUTS)
    check_travels(INPUTS, f"inputs of {len(names)} rows")


def video_patches(root: Path, out: Path, masks: tuple[str, ...]) -> list[Path]:
    """`selfsup video patches` on each video set under `root` with mask settings `masks`
    (once; kept in `out`); the patches.npz files written."""
    files = []
    for name, argv in patch_commands(root, out, masks).items():
        if not (out / name / "patches.npz").is_file():
            selfsup(*argv)
        files.append(out / name / "patches.npz")
    return files


def transitive_graph(
    root: Path, args: argparse.Namespace, masks: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """(patches, graph) of the transitive rows whose video patches come from masks made
    with `masks`, made once per machine: the video patches (carried, else mined from
    `root`'s videos) beside the CIFAR-10 training images, each its own track, embedded by a
    relative-position run (the relative-position row's, when it ran here, else one trained
    for the shared budget) and built into one graph; or the graph an earlier run kept
    (--keep-graph), carried in `root` (--prepare --graph): training checks that it was built
    for these very patches."""
    name = graph_set(masks)
    folder = RUNS / f"{name}_graph"
    patches, graph = folder / "patches.npz", folder / "graph.npz"
    if graph.is_file():
        return patches, graph
    folder.mkdir(parents=True, exist_ok=True)
    carried = sorted((root / name).glob("*/patches.npz"))
    video_files = carried or video_patches(root, folder, masks)
    cifar = data_paths(ROWS["relative-position"], root)
    merge_patches(video_files, cifar["train"], patches, size=32)
    if (root / name / "graph.npz").is_file():
        shutil.copyfile(root / name / "graph.npz", graph)
        return patches, graph
    embedder = RUNS / "relative-position"
    if not (embedder / "checkpoints" / "last.pt").is_file():
        embedder = folder / "embedder"
        steps = planned_steps(ROWS["relative-position"], cifar, args, folder / "trial")
        selfsup(*train_argv(ROWS["relative-position"], cifar, embedder, steps, args.train_extra))
    selfsup("graph", "build", "--patches", str(patches), "--embed", str(embedder),
            "--out", str(graph))  # fmt: skip
    return patches, graph


def data_paths(row: Row, root: Path) -> dict[str, Path]:
    """Pretraining, kNN memory bank and probe training set (the training split) and the test
    set; Tiny ImageNet's carved from its training images."""
    paths = {split: root / relative for split, relative in SOURCES[row.data].items()}
    if "test" not in paths:
        per_class = 2 if root == QUICK_DATA else TINY_TEST_PER_CLASS
        folder = root / f"{row.data}_split"
        paths["train"], paths["test"] = carve_validation(paths["train"], folder, per_class)
    if row.videos:
        paths["videos"] = root / VIDEOS
    return paths


# ---------------------------------------------------------------------------------------------
# Running a row
# ---------------------------------------------------------------------------------------------


def selfsup(*argv: str, quiet: bool = True) -> float:
    """Run `selfsup ARGV` as a user would; its wall-clock seconds."""
    command = [sys.executable, "-m", "selfsup", *argv, *(["--quiet"] if quiet else [])]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=CHILD_ENV)
    if done.returncode != 0:
        raise RuntimeError(f"{portable(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def last_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])


def batch_of(folder: Path) -> int:
    return yaml.safe_load((folder / "config.yaml").read_text())["data"]["batch_size"]


def train_argv(
    row: Row, paths: dict[str, Path], folder: Path, steps: int, extra: tuple[str, ...] = ()
) -> list[str]:
    """The row's `selfsup train` arguments; `extra` overrides come last, so they win."""
    videos = ["--videos", str(paths["videos"])] if row.videos else []
    if row.graph:  # trains on the graph's patches; evaluated on the images like every row
        data = ["--data", str(paths["patches"]), "--graph", str(paths["graph"])]
    else:
        data = ["--data", str(paths["train"])]
    options = [*data, *videos, "--out", str(folder), "--steps", str(steps)]
    return ["train", *row.train, *options, *extra]


def planned_steps(row: Row, paths: dict[str, Path], args: argparse.Namespace, trial: Path) -> int:
    """Steps of the row's schedule: --steps with --quick, its epochs, or what --minutes of
    training afford at the rate a short trial run (in folder `trial`) measures: with rows
    running at once, the rate they leave it."""
    if args.steps:
        return args.steps
    with np.load(paths["train"]) as archive:
        images = len(archive["labels"])
    if row.epochs:
        batch = next(int(a.split("=")[1]) for a in row.train if a.startswith("data.batch_size="))
        return int(row.epochs * (images // batch))
    shutil.rmtree(trial, ignore_errors=True)
    selfsup(*train_argv(row, paths, trial, 40, args.train_extra), "train.log_every=20")
    rate = last_metrics(trial)["images_per_sec"]  # the second window: warm-up excluded
    batch = batch_of(trial)
    shutil.rmtree(trial)
    return max(1, int(args.minutes * 60 * rate / batch))


def evaluate(folder: Path, paths: dict[str, Path], random_init: bool, probe: list[str]) -> dict:
    """kNN on the final layer and linear probes on every layer, on the test set; `probe`:
    extra `eval linear` options."""
    common = ["--data", str(paths["train"]), "--test", str(paths["test"]), "--no-cache"]
    common += ["--random-init"] if random_init else []
    seconds = selfsup("eval", "knn", str(folder), *common, "--json", str(folder / "knn"))
    seconds += selfsup(
        "eval", "linear", str(folder), *common, *probe, "--json", str(folder / "linear")
    )
    knn, linear = (first_model(folder / f"{name}.json") for name in ("knn", "linear"))
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


def first_model(path: Path) -> dict:
    """The results of the one model an `eval --json` file holds (a list when it holds more)."""
    data = json.loads(path.read_text())
    return data[0] if isinstance(data, list) else data


def run_row(name: str, root: Path, args: argparse.Namespace) -> dict:
    row = ROWS[name]
    trained = ROWS[row.random_of] if row.random_of else row
    with SPLITTING:  # made once, by the first row that needs it
        paths = data_paths(trained, root)
    if trained.graph:
        with GRAPHING:
            paths["patches"], paths["graph"] = transitive_graph(root, args, trained.masks)
    if trained.videos and trained.masks:  # masks made with these settings, read from there
        masks = RUNS / f"{name}_masks"
        shutil.rmtree(masks, ignore_errors=True)  # a rerun on this machine makes them afresh
        selfsup("video", "masks", str(paths["videos"]), "--out", str(masks), *trained.masks)
        paths["videos"] = masks
    folder = RUNS / name
    shutil.rmtree(folder, ignore_errors=True)
    # A random-init row builds its architecture with one step of its method's command.
    steps = 1 if row.random_of else planned_steps(row, paths, args, RUNS / f"{name}_trial")
    argv = train_argv(trained, paths, folder, steps, args.train_extra)
    train_seconds = selfsup(*argv)
    trained_here = not row.random_of
    result = {
        "label": row.label,
        "data": row.data,
        "train_command": portable(["selfsup", *argv]) if trained_here else None,
        "steps": steps if trained_here else 0,
        "train_seconds": round(train_seconds, 1) if trained_here else None,
        "peak_memory_gib": last_metrics(folder).get("max_memory_gib") if trained_here else None,
        **evaluate(folder, paths, random_init=not trained_here, probe=args.probe),
        "date": time.strftime("%Y-%m-%d"),
        "device": device_name(),
        "concurrent": args.parallel,  # rows sharing the GPU while this one ran (at most)
    }
    with np.load(paths["train"]) as archive:
        result["epochs"] = round(result["steps"] * batch_of(folder) / len(archive["labels"]), 2)
    return result


def run_rows(names: list[str], root: Path, args: argparse.Namespace, results: dict) -> list[str]:
    """Run rows `names`, up to --parallel at once, each saved to the results file as it ends;
    a row that fails is reported and the others go on. The rows that failed."""
    started = time.monotonic()
    futures: dict[str, Future] = {}
    failed = []

    def start(name: str) -> dict | None:
        if ROWS[name].graph and "relative-position" in futures:
            futures["relative-position"].exception()  # its run embeds the graph's patches
        row, left = ROWS[name], time_left(started, args.deadline)
        budgeted = not (row.random_of or row.epochs or args.steps)  # sized by --minutes
        if budgeted and left < args.minutes * 60 + ROW_OVERHEAD_SECONDS:
            say(f"{name}: {left:.0f} s left before --deadline, not started")
            return None
        say(f"{name}: running")
        return run_row(name, root, args)

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        for name in names:
            futures[name] = pool.submit(start, name)
        rows_of = {future: name for name, future in futures.items()}
        for future in as_completed(rows_of):  # saved here, one at a time, as they end
            name = rows_of[future]
            try:
                result = future.result()
            except Exception as error:  # one broken row must not cost the others their run
                failed.append(name)
                say(f"{name}: FAILED: {error}")
                continue
            if result is not None:
                results["rows"][name] = result
                write_json(args.results, results)
                say(f"{name}: kNN {result['knn_top1']:.1f} %")
    return failed


def keep_graphs(root: Path, args: argparse.Namespace) -> None:
    """Build the graph of every graph row's patch set (with this run's relative-position
    row, when it ran) and write each to --keep-graph DIR as `<set>-graph.npz`, for the
    transitive rows of a later run on a bare machine."""
    args.keep_graph.mkdir(parents=True, exist_ok=True)
    for masks in sorted({row.masks for row in ROWS.values() if row.graph}):
        target = args.keep_graph / f"{graph_set(masks)}-graph.npz"
        shutil.copyfile(transitive_graph(root, args, masks)[1], target)
        print(f"transitive graph kept in {target}")


def say(line: str) -> None:
    """One whole line at once: rows running in threads print without splicing lines."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def time_left(started: float, deadline: float | None) -> float:
    return deadline - (time.monotonic() - started) if deadline else float("inf")


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------------------------------------
# Results file, claims and table
# ---------------------------------------------------------------------------------------------


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"rows": {}}


def best_linear(row: dict) -> float:
    return max(row["linear_top1"].values())


def verdict(claim: dict, rows: dict) -> str:
    """Confirmed, not confirmed (with the figures) or not yet measured, as the claim's
    `compare` reads the linear probes of its row against each of its `against` rows."""
    if not all(name in rows for name in [claim["row"], *claim["against"]]):
        return "not yet measured"
    ours, others = rows[claim["row"]], [rows[name] for name in claim["against"]]
    if claim["compare"] == "every_layer":
        below = [
            layer for layer, top1 in ours["linear_top1"].items()
            if any(top1 <= other["linear_top1"].get(layer, 0) for other in others)
        ]  # fmt: skip
        return f"not confirmed: at or below on {', '.join(below)}" if below else "confirmed"
    best = max(claim["against"], key=lambda name: best_linear(rows[name]))
    margin = best_linear(ours) - best_linear(rows[best])
    return f"{'confirmed' if margin > 0 else 'not confirmed'}: {margin:+.2f} points against {best}"


def claims(rows: dict) -> list[tuple[str, str]]:
    """Each paper's own claim at this scale, and its verdict on the rows measured so far."""
    return [(claim["claim"], verdict(claim, rows)) for claim in CLAIMS]


def table(results: dict) -> str:
    """The results page: every row, measured or not, then the claims."""
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
    lines += ["", "## Commands", ""]
    commands = [
        f"- {name}: `{measured['train_command']}`"
        for name, measured in results["rows"].items()
        if measured.get("train_command")
    ]
    lines += commands or ["None yet: no row has been measured."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rows", nargs="*", help="rows to run (default: every row not measured)")
    parser.add_argument("--list", action="store_true", help="print the rows and their state")
    parser.add_argument("--prepare", action="store_true", help="write the rows' inputs")
    parser.add_argument("--table", action="store_true", help="print the table, run nothing")
    parser.add_argument(
        "--minutes",
        type=float,
        default=6.0,
        help="training minutes a row (wall-clock, beside the others with --parallel)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny data and 2 steps (CPU, CI)")
    parser.add_argument("--steps", type=int, help="fixed steps for every row (default: budget)")
    parser.add_argument("--results", type=Path, help="results JSON (default by mode)")
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="K",
        help="rows run at once, sharing the GPU (default 1)",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        metavar="SECONDS",
        help="start no budgeted row that would end past this many seconds",
    )
    parser.add_argument(
        "--keep-graph",
        type=Path,
        metavar="DIR",
        help="after the rows, write the transitive rows' graphs (built with this run's "
        "relative-position row when it ran) to DIR",
    )
    parser.add_argument(
        "--graph",
        type=Path,
        metavar="FILE",
        action="append",
        default=[],
        help="with --prepare: carry this kept graph (a <set>-graph.npz that --keep-graph "
        "wrote) for the transitive rows; repeatable",
    )
    args = parser.parse_args(argv)
    for graph in args.graph:
        if not graph.is_file() or not graph.name.endswith("-graph.npz"):
            parser.error(f"--graph {graph}: not a <set>-graph.npz file that --keep-graph wrote")
    if args.parallel < 1:
        parser.error(f"--parallel must be at least 1, got {args.parallel}")
    unknown = [name for name in args.rows if name not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; see --list")
    args.probe = []
    args.train_extra = ()
    if args.quick:
        args.steps = args.steps or 2
        # The quick data holds 256 images: fewer than the SimCLR rows' batch of 512.
        args.train_extra = ("data.batch_size=16",)
        # One L2 strength and a few L-BFGS iterations: the probe's code runs, not its search.
        args.probe = ["--weight-decay", "0.01", "--steps", "10"]
    default = WORK / "gpu_results_quick.json" if args.quick else RESULTS_FILE
    args.results = args.results or default
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.parallel > 1:  # the CPU's threads shared out, not oversubscribed K times
        threads = max(1, (os.cpu_count() or 1) // args.parallel)
        CHILD_ENV.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    results = load_results(args.results)
    if args.list:
        for name, row in ROWS.items():
            state = "measured" if name in results["rows"] else "to run"
            print(f"{name:28s} {row.data:13s} {state}")
        return
    names = args.rows or list(ROWS)
    if args.prepare:
        prepare(names, args.graph)
        return
    failed = []
    if not args.table:
        root = data_root(INPUTS, args.quick)
        for name in names:
            if name in results["rows"]:
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
    if failed:
        sys.exit(f"rows that failed: {', '.join(failed)} (their errors are above)")


if __name__ == "__main__":
    main()
