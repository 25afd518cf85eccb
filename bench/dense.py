"""Dense benchmark: depth, surface normals and detection rows for pretrained runs beside
random initialisation (and a supervised baseline with --supervised-data), at CPU-friendly sizes.

    python bench/dense.py                                   # every run under bench/work/
    python bench/dense.py bench/work/counting_cifar10 --tasks depth normals
    python bench/dense.py RUN --smoke --out /tmp/dense.json # seconds: checks the pipeline only
    python bench/dense.py --models random:RUN --out part.json  # one share of the work

Data (7-Scenes, COCO128) and protocol: docs/evaluation.md. Each evaluation's JSON goes to
bench/work/dense/; the rows, the commands and the machine to bench/results/dense.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from harness.record import RESULTS, WORK, data_dir, machine, parser, portable, run, say, write_json

HEADLINE = {
    "depth": ("delta1", "abs_rel", "rmse"),
    "normals": ("mean_deg", "median_deg", "within_11.25", "within_30"),
    "detect": ("map_50", "map"),
}


def models(runs: list[str], supervised_data: str | None) -> list[str]:
    """The runs, then random init of every distinct architecture among them (the floor: the
    first run of each architecture, its resolved config's backbone section, stands for it),
    and the first run's architecture trained with labels (the ceiling)."""
    if not runs:
        return ["random:resnet18"]
    by_architecture = {}
    for folder in runs:
        backbone = yaml.safe_load((Path(folder) / "config.yaml").read_text()).get("backbone")
        by_architecture.setdefault(json.dumps(backbone, sort_keys=True), f"random:{folder}")
    supervised = [f"supervised:{runs[0]}"] if supervised_data else []
    return [*runs, *by_architecture.values(), *supervised]


def command(model: str, task: str, out: Path, args: argparse.Namespace) -> list[str]:
    common = ["--json", str(out), "--quiet", "--cache-dir", str(WORK / "cache")]
    if args.supervised_data:
        common += ["--supervised-data", args.supervised_data]
    if task == "detect":
        seeds = [str(s) for s in args.seeds]
        sizes = ["--steps", str(args.det_steps), "--size", str(args.det_size), "--seeds", *seeds]
        data = ["detect", model, "--data", str(args.det_data)]
    else:
        sizes = ["--steps", str(args.depth_steps), "--size", str(args.depth_size), "--frozen"]
        data = ["depth", model, "--data", str(args.depth_data)]
        common += ["--target", task]
    return [sys.executable, "-m", "selfsup", "eval", *data, *common, *sizes]


def row(model: str, task: str, result: dict) -> dict:
    if task == "detect":
        numbers = {
            key: {k: round(v, 4) for k, v in result["summary"][key].items() if k != "values"}
            for key in HEADLINE[task]
        }
    else:
        numbers = {key: round(result["metrics"][key], 4) for key in HEADLINE[task]}
        floor = result["constant_baseline"]
        numbers["constant_baseline"] = {key: round(floor[key], 4) for key in HEADLINE[task]}
    return {"model": model, "task": task, **numbers, "seconds": result["seconds"]}


def markdown(rows: list[dict]) -> str:
    lines = []
    for task, keys in HEADLINE.items():
        chosen = [r for r in rows if r["task"] == task]
        if chosen:
            lines += [f"\n{task}\n", "| model | " + " | ".join(keys) + " |"]
            lines.append("|---" * (len(keys) + 1) + "|")
        for r in chosen:
            cells = [
                f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}"
                if isinstance(r[k], dict)
                else f"{r[k]:.3f}"
                for k in keys
            ]
            lines.append(f"| {portable([r['model']])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    data = data_dir()
    p = parser(__doc__)
    p.add_argument("runs", nargs="*", help="run folders (default: those under bench/work/)")
    p.add_argument(
        "--models", nargs="+",
        help="evaluate exactly these (runs, random:RUN, supervised:RUN) instead of the runs and "
        "their baselines; with the same options a later full run reads their results back",
    )  # fmt: skip
    p.add_argument("--tasks", nargs="+", default=list(HEADLINE), choices=list(HEADLINE))
    p.add_argument("--depth-data", default=data / "depth" / "7scenes_redkitchen_200.npz")
    p.add_argument("--det-data", default=data / "detection" / "coco128")
    p.add_argument("--supervised-data", help="labelled images: adds a supervised:<run> row")
    p.add_argument("--depth-steps", type=int, default=300)
    p.add_argument("--depth-size", type=int, default=64, help="64x85 px for 7-Scenes")
    p.add_argument("--det-steps", type=int, default=200)
    p.add_argument("--det-size", type=int, default=128)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--smoke", action="store_true", help="2 steps, 1 seed, tiny sizes")
    p.add_argument("--out", type=Path, default=RESULTS / "dense.json")
    args = p.parse_args()
    if args.smoke:
        args.depth_steps = args.det_steps = 2
        args.depth_size, args.det_size, args.seeds = 32, 96, [0]
    return args


def main() -> None:
    args = parse_args()
    # The run folders the main benchmark left under bench/work/ (those with a checkpoint).
    runs = args.runs or sorted(str(p.parent.parent) for p in WORK.glob("*/checkpoints/last.pt"))
    rows, commands = [], {}
    for model in args.models or models(runs, args.supervised_data):
        kind, _, target = model.rpartition(":")  # random:bench/work/x -> x-random
        for task in args.tasks:
            name = f"{Path(target).name}{f'-{kind}' if kind else ''}-{task}"
            out = WORK / "dense" / f"{name}.json"
            cmd = command(model, task, out, args)
            # A finished evaluation with the same command is read back: an interrupted
            # benchmark picks up where it stopped.
            done = out.with_suffix(".command.json")
            if not (out.exists() and done.exists() and json.loads(done.read_text()) == cmd):
                run(cmd)
                done.write_text(json.dumps(cmd))
            commands[name] = portable(cmd)
            rows.append(row(model, task, json.loads(out.read_text())))
            say(json.dumps(rows[-1]))
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report = {
        "rows": rows,
        "settings": {k: v for k, v in settings.items() if k not in ("runs", "out")},
        "notes": "7-Scenes colour and depth are not registered: depth/normals are coarse "
        "(64x85 px); COCO128 train2017 only (val2017 is kept aside): 102 train / 26 test "
        "images, so detection mAP is noisy; see the per-seed spread.",
        "commands": commands,
        "machine": machine(),
        # The evaluations' own time, rows read back from an earlier run included.
        "seconds": round(sum(r["seconds"] for r in rows), 1),
    }
    write_json(args.out, report)
    print(markdown(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
