"""Benchmarks: pretrain for a fixed step budget, then report linear probes and kNN per layer
beside random init and a supervised baseline trained for the same budget.

    python bench/run.py                     # the counting suite
    python bench/run.py --only counting_cifar10 --steps 200
    python bench/run.py --suite multitask   # then --suite transitive, whose graph it embeds

The suites (bench/suites.yaml) pretrain rows of bench/gpu_results.yaml; per entry,
bench/results/<entry>/ gets the reports and bench/results/<entry>.json the figures.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import numpy as np
import yaml
from harness import record as rec
from harness.data import carve_validation
from harness.rows import ROWS, data_paths, metrics, patch_graph, train_argv
from harness.runner import finish, run_all

SUITES = yaml.safe_load((rec.ROOT / "bench" / "suites.yaml").read_text())
SELFSUP = [sys.executable, "-m", "selfsup"]
GRAPH = rec.WORK / "transitive"  # the transitive suite's patches and graph


@dataclass(frozen=True)
class Entry:
    """One entry of bench/suites.yaml (its header says what each field means)."""

    row: str
    steps: int
    probe_per_class: int | None = None
    baselines: str = "full"
    time_probes: bool = True
    overrides: tuple[str, ...] = ()


def run_entry(name: str, entry: Entry, steps: int | None) -> dict:
    """Pretrain the entry's row (on its images, or the transitive suite's graph), then its
    reports, with their floor and ceiling rows as its `baselines` says; the figures of its
    results file."""
    out, reports, steps = rec.WORK / name, rec.RESULTS / name, steps or entry.steps
    paths = data_paths(ROWS[entry.row], rec.data_dir())
    paths.update(patches=GRAPH / "patches.npz", graph=GRAPH / "graph.npz")
    probe = paths["train"]  # what the probes train on
    if entry.probe_per_class:
        split = rec.WORK / "cifar10_probe"
        probe = carve_validation(paths["train"], split, entry.probe_per_class)[1]
    data = ["--data", str(probe), "--test", str(paths["test"])]
    cache = ["--cache-dir", str(rec.WORK / "cache"), "--quiet"]
    argv = train_argv(ROWS[entry.row], paths, out, steps, tuple(entry.overrides))
    commands = {"train": [*SELFSUP, *argv, "--quiet"]}
    shared = rec.RESULTS / entry.baselines.removeprefix("shared:")
    baselines = {"full": [], "random": [f"random:{out}", "--no-baselines"]}
    for protocol in ("linear", "knn"):  # a shared baseline not yet evaluated comes first
        report = [*SELFSUP, "report", "--protocol", protocol, *data, *cache]
        results = shared / protocol / "results.json"
        if entry.baselines.startswith("shared:") and not results.is_file():
            commands[f"baselines_{protocol}"] = [
                *report, f"random:{out}", f"supervised:{out}", "--no-baselines",
                "--out", str(shared / protocol),
            ]  # fmt: skip
        theirs = baselines.get(entry.baselines, [str(results), "--no-baselines"])
        commands[protocol] = [*report, str(out), *theirs, "--out", str(reports / protocol)]
    cached = rec.WORK / f"{name}_linear_cached.json"
    if entry.time_probes:  # features are cached by now: this times the probes alone
        commands["linear_cached"] = [
            *SELFSUP, "eval", "linear", str(out), *data, *cache, "--json", str(cached)
        ]  # fmt: skip
    seconds = {key: round(rec.run(command).seconds, 1) for key, command in commands.items()}
    rec.scrub(reports)
    if "baselines_linear" in commands or "baselines_knn" in commands:
        rec.scrub(shared)
    logged = metrics(out)
    probes = {p: json.loads((reports / p / "results.json").read_text()) for p in ("linear", "knn")}
    timed = json.loads(cached.read_text()) if entry.time_probes else {}
    return {
        "entry": name,
        "steps": steps,
        "seconds": seconds,
        "images_per_sec": float(np.median([m["images_per_sec"] for m in logged])),
        "final_loss": logged[-1]["loss"],
        "probe_seconds_on_cached_features": timed.get("probe_seconds"),
        "machine": rec.machine(),
        "commands": {key: rec.portable(command) for key, command in commands.items()},
        # {protocol: {model: {layer: top-1}}} of the reports' results.json
        **{
            protocol: {r["model"]: {row["layer"]: row["top1"] for row in r["layers"]} for r in rows}
            for protocol, rows in probes.items()
        },
    }


def build_graph() -> None:
    """The transitive suite's patch graph (harness.rows.patch_graph: DAVIS clips and vtest
    beside the CIFAR-10 training images), embedded by the multitask suite's
    relative-position run; its figures to bench/results/ti_graph.json."""
    from selfsup.data.patch_graph import load_graph, load_patches
    from selfsup.graph.build import graph_stats

    embed = rec.WORK / "mt_relative-position"
    if not (embed / "checkpoints" / "last.pt").is_file():
        sys.exit(f"{embed} is missing: run `python bench/run.py --suite multitask "
                 "--only mt_relative-position` first (it embeds the patches)")  # fmt: skip
    (GRAPH / "graph.npz").unlink(missing_ok=True)  # built afresh, so that its time is measured
    built = patch_graph(rec.data_dir(), GRAPH, lambda: embed)
    patches = load_patches(GRAPH / "patches.npz")
    summary = {
        "entry": "ti_graph",
        "patches": built["patches"],
        "graph_seconds": built["graph_seconds"],
        "stats": graph_stats(load_graph(GRAPH / "graph.npz", patches), patches.labels),
        "commands": built["commands"],
        "machine": rec.machine(),
    }
    rec.write_json(rec.RESULTS / "ti_graph.json", summary)


def main() -> None:
    p = rec.parser(__doc__, "--steps", only=[name for named in SUITES.values() for name in named])
    p.add_argument("--suite", choices=list(SUITES), default="counting")
    args = p.parse_args()
    if not (rec.data_dir() / "cifar10").is_dir():
        sys.exit(f"benchmark data not found at {rec.data_dir()}; set SELFSUP_DATA")
    if args.suite == "transitive":
        build_graph()
    suite = {name: Entry(**entry) for name, entry in SUITES[args.suite].items()}

    def save(name: str, result: dict) -> None:
        if "error" not in result:
            rec.write_json(rec.RESULTS / f"{name}.json", result)
            rec.say(json.dumps({k: result[k] for k in ("entry", "steps", "seconds")}))

    names = [name for name in suite if name in (args.only or suite)]
    finish(run_all(names, lambda name: run_entry(name, suite[name], args.steps), save), "entries")


if __name__ == "__main__":
    main()
