"""Benchmarks: pretrain for a fixed step budget, then report linear probes and kNN per layer
beside random init and a supervised baseline trained for the same budget.

    python bench/run.py                     # every entry
    python bench/run.py --only counting_cifar10 --steps 200

Data comes from `$SELFSUP_DATA` (default: `../shared/data` beside the repository), laid out
as `entries()` below names the files. Per entry, `bench/results/<entry>/` gets the
reports (`linear/`, `knn/`: report.md, accuracy.png, results.json) and `bench/results/<entry>.json`
the figures, commands, timings and machine. Runs and caches go to `bench/work/` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from harness.data import carve_validation, merge_patches, patch_commands
from harness.record import RESULTS, WORK, data_dir, machine, portable, run, scrub, write_json


def entries(data: Path) -> dict[str, dict]:
    """name -> what to pretrain on and how to evaluate it."""
    tiny_train, tiny_val = carve_validation(
        data / "tinyimagenet" / "train_jpeg.npz", WORK / "tinyimagenet_split", per_class=50
    )
    return {
        "counting_cifar10": {
            "pretrain": data / "cifar10" / "train_jpeg.npz",
            "probe_train": data / "cifar10" / "train_jpeg.npz",
            "probe_test": data / "cifar10" / "test_jpeg.npz",
            "config": "counting_small",
            "steps": 2000,
            "overrides": [],
        },
        "counting_tinyimagenet": {
            "pretrain": tiny_train,
            "probe_train": tiny_train,
            "probe_test": tiny_val,
            "config": "counting_small",
            "steps": 1000,
            "overrides": ["data.image_size=64", "counting.crop_size=64"],
            # 64 px costs four times the compute of 32 px: the supervised row is left to the
            # CIFAR-10 entry, this one stands beside random init.
            "baselines": "random",
        },
    }


# The balanced run's trunk gradient norm: the mean of the four tasks' `<task>/trunk_grad_norm`
# over the first 20 steps of the plain run (multitask_small, no lasso; the values are in
# bench/results/readings/multitask.md), so that balancing changes the tasks' shares of the
# trunk's step, not its size. The pair's budget keeps the suite's schedule, a third warm-up.
BALANCED_NORM = 0.0077
BALANCE_STEPS = 100
BALANCE_WARMUP = 33


def multitask_entries(data: Path) -> dict[str, dict]:
    """Doersch & Zisserman at small scale: every single task and the four-task combination
    (naive, lasso, harmonized) for one budget on the CIFAR-10 protocol. Motion segmentation
    reads the motion masks of the DAVIS clips (computed once, cached)."""
    videos = ["--videos", str(data / "video" / "davis2016" / "JPEGImages" / "480p")]
    # Nine pretrainings must fit a CPU afternoon: the probes train on 1000 labelled images per
    # class carved from the training set (the pretraining still sees all 50000, unlabelled).
    _, probe_train = carve_validation(
        data / "cifar10" / "train_jpeg.npz", WORK / "cifar10_probe", per_class=1000
    )
    common = {
        "pretrain": data / "cifar10" / "train_jpeg.npz",
        "probe_train": probe_train,
        "probe_test": data / "cifar10" / "test_jpeg.npz",
        "config": "multitask_small",
        "steps": 300,
        "baselines": "shared:mt_baselines",
        "time_probes": False,
    }
    single = ["relative-position", "colorization", "exemplar", "rotation", "jigsaw"]
    out = {
        f"mt_{task}": {**common, "task": "multitask", "extra": ["--tasks", task],
                       "overrides": ["multitask.lasso=false"]}
        for task in single
    }  # fmt: skip
    out["mt_motion-segmentation"] = {
        **common, "task": "multitask", "extra": ["--tasks", "motion-segmentation", *videos],
        "overrides": ["multitask.lasso=false"],
    }  # fmt: skip
    for name, overrides in {
        "mt_four_naive": ["multitask.lasso=false"],
        "mt_four_lasso": [],
        "mt_four_harmonized": ["multitask.harmonize=true"],
    }.items():
        out[name] = {**common, "task": "multitask", "extra": videos, "overrides": overrides}
    # Loss scales: the four tasks' plain sum against every task's trunk gradient rescaled to
    # one norm, BALANCED_NORM (above), for a shorter budget than the entries above; run as a
    # pair, so both come from the same code and machine.
    for name, overrides in {
        "mt_balance_plain": ["multitask.lasso=false"],
        "mt_balance_normalized": [
            "multitask.lasso=false",
            f"multitask.trunk_grad_norm={BALANCED_NORM}",
        ],
    }.items():
        overrides = [*overrides, f"optim.warmup_steps={BALANCE_WARMUP}"]
        out[name] = {**common, "task": "multitask", "extra": videos, "overrides": overrides,
                     "steps": BALANCE_STEPS}  # fmt: skip
    return out


def transitive_entries(data: Path) -> dict[str, dict]:
    """Wang, He & Gupta at small scale: the three edge ablations on one graph, the trunk and
    budget of the multitask suite, probed on the same CIFAR-10 protocol."""
    patches, graph = prepare_transitive(data)
    _, probe_train = carve_validation(
        data / "cifar10" / "train_jpeg.npz", WORK / "cifar10_probe", per_class=1000
    )
    common = {
        "task": "transitive",
        "pretrain": patches,
        "extra": ["--graph", str(graph)],
        "probe_train": probe_train,
        "probe_test": data / "cifar10" / "test_jpeg.npz",
        "config": "transitive_small",
        "steps": 300,
        # Same trunk and budget as the multitask suite: the same baseline rows.
        "baselines": "shared:mt_baselines",
        "time_probes": False,
    }
    return {
        f"ti_{edges}": {**common, "overrides": [f"transitive.edges={edges}"]}
        for edges in ("inter", "intra", "transitive")
    }


def prepare_transitive(data: Path) -> tuple[Path, Path]:
    """Patches of the real videos (DAVIS clips, OpenCV's vtest) beside CIFAR-10 training
    images, embedded by the multitask suite's relative-position run, as one graph. The videos
    give the tracks (intra edges) but too few patches for inter edges to mean much alone, so
    the images, each its own track, add them. Writes bench/results/ti_graph.json."""
    folder = WORK / "transitive"
    embed = WORK / "mt_relative-position"
    if not (embed / "checkpoints" / "last.pt").is_file():
        sys.exit(f"{embed} is missing: run `python bench/run.py --suite multitask "
                 "--only mt_relative-position` first (it embeds the patches)")  # fmt: skip
    selfsup = [sys.executable, "-m", "selfsup"]
    commands, sets = {}, patch_commands(data, folder)
    for name, argv in sets.items():
        commands[f"patches_{name}"] = [*selfsup, *argv, "--quiet"]
        if not (folder / name / "patches.npz").is_file():
            run(commands[f"patches_{name}"])
    patches = folder / "patches.npz"
    videos = [folder / name / "patches.npz" for name in sets]
    counts = merge_patches(videos, data / "cifar10" / "train_jpeg.npz", patches, size=32)
    graph = folder / "graph.npz"
    commands["graph"] = [
        *selfsup, "graph", "build", "--patches", str(patches), "--embed", str(embed),
        "--out", str(graph), "--quiet",
    ]  # fmt: skip
    seconds = run(commands["graph"])
    from selfsup.data.patch_graph import load_graph, load_patches
    from selfsup.graph.build import graph_stats

    patch_set = load_patches(patches)
    stats = graph_stats(load_graph(graph, patch_set), patch_set.labels)
    summary = {
        "entry": "ti_graph",
        "patches": counts,
        "graph_seconds": round(seconds, 1),
        "stats": stats,
        "commands": {key: portable(command) for key, command in commands.items()},
        "machine": machine(),
    }
    write_json(RESULTS / "ti_graph.json", summary)
    return patches, graph


SUITES = {"counting": entries, "multitask": multitask_entries, "transitive": transitive_entries}


def baseline_commands(name: str, entry: dict, out: Path) -> tuple[dict, dict]:
    """How an entry gets its floor and ceiling rows: per entry's `baselines`,
    "full": random init and supervised, evaluated in the entry's reports;
    "random": random init only; "shared:<key>": random and supervised evaluated once into
    bench/results/<key>/ (beside the first entry of a suite that trains them) and read back by
    every entry of the suite, so nine entries do not refit the same baseline probes nine times.
    Returns (per-protocol report arguments, commands to run first)."""
    mode = entry.get("baselines", "full")
    if mode == "full":
        return {"linear": [], "knn": []}, {}
    if mode == "random":
        return {p: [f"random:{out}", "--no-baselines"] for p in ("linear", "knn")}, {}
    shared = RESULTS / mode.removeprefix("shared:")
    specs = [f"random:{out}", f"supervised:{out}", "--no-baselines"]
    first, args = {}, {}
    for protocol in ("linear", "knn"):
        results = shared / protocol / "results.json"
        if not results.is_file():
            first[f"baselines_{protocol}"] = [
                *report_command(entry, protocol), *specs, "--out", str(shared / protocol)
            ]  # fmt: skip
        args[protocol] = [str(results), "--no-baselines"]
    return args, first


def report_command(entry: dict, protocol: str) -> list[str]:
    return [
        *[sys.executable, "-m", "selfsup", "report", "--protocol", protocol],
        *["--data", str(entry["probe_train"]), "--test", str(entry["probe_test"])],
        *["--cache-dir", str(WORK / "cache"), "--quiet"],
    ]


def bench_entry(name: str, entry: dict, steps: int | None) -> dict:
    selfsup = [sys.executable, "-m", "selfsup"]
    out, report_dir = WORK / name, RESULTS / name
    steps = steps or entry["steps"]
    cache = ["--cache-dir", str(WORK / "cache"), "--quiet"]
    data = ["--data", str(entry["probe_train"]), "--test", str(entry["probe_test"])]
    baselines, first = baseline_commands(name, entry, out)
    train = [*selfsup, "train", entry.get("task", "counting"), "--data", str(entry["pretrain"])]
    train += [*entry.get("extra", []), "--out", str(out), "--config", entry["config"]]
    commands = {"train": [*train, "--steps", str(steps), "--quiet", *entry["overrides"]], **first}
    for protocol in ("linear", "knn"):
        commands[protocol] = [*report_command(entry, protocol), str(out), *baselines[protocol]]
        commands[protocol] += ["--out", str(report_dir / protocol)]
    if entry.get("time_probes", True):
        # Features are cached by now: this times the probes alone.
        cached = ["--json", str(WORK / f"{name}_linear_cached.json")]
        commands["linear_cached"] = [*selfsup, "eval", "linear", str(out), *data, *cache, *cached]
    seconds = {key: round(run(command), 1) for key, command in commands.items()}
    scrub(report_dir)
    if first:
        scrub(RESULTS / entry["baselines"].removeprefix("shared:"))
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    linear = json.loads((report_dir / "linear" / "results.json").read_text())
    knn = json.loads((report_dir / "knn" / "results.json").read_text())
    cached_file = WORK / f"{name}_linear_cached.json"
    cached = json.loads(cached_file.read_text()) if "linear_cached" in commands else {}
    return {
        "entry": name,
        "steps": steps,
        "seconds": seconds,
        "images_per_sec": float(np.median([m["images_per_sec"] for m in metrics])),
        "final_loss": metrics[-1]["loss"],
        "probe_seconds_on_cached_features": cached.get("probe_seconds"),
        "machine": machine(),
        "commands": {key: portable(command) for key, command in commands.items()},
        "linear": {r["model"]: {row["layer"]: row["top1"] for row in r["layers"]} for r in linear},
        "knn": {r["model"]: {row["layer"]: row["top1"] for row in r["layers"]} for r in knn},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="counting")
    parser.add_argument("--only", nargs="+", help="entries to run (default: all)")
    parser.add_argument("--steps", type=int, help="override every entry's pretraining steps")
    args = parser.parse_args()
    data = data_dir()
    if not (data / "cifar10").is_dir():
        sys.exit(f"benchmark data not found at {data}; set SELFSUP_DATA")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, entry in SUITES[args.suite](data).items():
        if args.only and name not in args.only:
            continue
        result = bench_entry(name, entry, args.steps)
        write_json(RESULTS / f"{name}.json", result)
        print(json.dumps({k: result[k] for k in ("entry", "steps", "seconds")}))


if __name__ == "__main__":
    main()
