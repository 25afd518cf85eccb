"""Benchmarks: pretrain for a fixed step budget, then report linear probes and kNN per layer
beside random init and a supervised baseline trained for the same budget.

    python bench/run.py                     # every entry
    python bench/run.py --only counting_cifar10 --steps 200

Data comes from `$SELFSUP_DATA` (default: `../shared/data` beside the repository), laid out
as described in the README's Benchmarks section. Per entry, `bench/results/<entry>/` gets the
reports (`linear/`, `knn/`: report.md, accuracy.png, results.json) and `bench/results/<entry>.json`
the figures, commands, timings and machine. Runs and caches go to `bench/work/` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work"
RESULTS = ROOT / "bench" / "results"


def data_dir() -> Path:
    return Path(os.environ.get("SELFSUP_DATA", ROOT.parent / "shared" / "data"))


def carve_validation(source: Path, out_dir: Path, per_class: int) -> tuple[Path, Path]:
    """Split a labelled packed-JPEG .npz into train / validation (the last `per_class` images
    of every class, by file order) so a probe is never scored on held-out test data."""
    out_dir.mkdir(parents=True, exist_ok=True)
    train_path, val_path = out_dir / "train.npz", out_dir / "val.npz"
    if train_path.exists() and val_path.exists():
        return train_path, val_path
    with np.load(source) as archive:
        labels, offsets, jpeg = archive["labels"], archive["offsets"], archive["jpeg"]
        val_rows = np.concatenate(
            [np.flatnonzero(labels == c)[-per_class:] for c in np.unique(labels)]
        )
        is_val = np.zeros(len(labels), bool)
        is_val[val_rows] = True
        for path, rows in ((train_path, np.flatnonzero(~is_val)), (val_path, val_rows)):
            blobs = [jpeg[offsets[i] : offsets[i + 1]] for i in rows]
            new_offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
            np.savez(
                path,
                jpeg=np.concatenate(blobs),
                offsets=new_offsets.astype(np.int64),
                labels=labels[rows],
                class_names=archive["class_names"],
            )
    return train_path, val_path


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
            "config": "configs/counting_small.yaml",
            "steps": 2000,
            "overrides": [],
        },
        "counting_tinyimagenet": {
            "pretrain": tiny_train,
            "probe_train": tiny_train,
            "probe_test": tiny_val,
            "config": "configs/counting_small.yaml",
            "steps": 500,
            "overrides": ["data.image_size=64", "counting.crop_size=64"],
        },
    }


def multitask_entries(data: Path) -> dict[str, dict]:
    """Doersch & Zisserman at small scale: every single task and the four-task combination
    (naive, lasso, harmonized) for one budget on the CIFAR-10 protocol. Motion segmentation
    reads the motion masks of the DAVIS clips (computed once, cached)."""
    videos = ["--videos", str(data / "video" / "davis2016" / "JPEGImages" / "480p")]
    common = {
        "pretrain": data / "cifar10" / "train_jpeg.npz",
        "probe_train": data / "cifar10" / "train_jpeg.npz",
        "probe_test": data / "cifar10" / "test_jpeg.npz",
        "config": "configs/multitask_small.yaml",
        "steps": 300,
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
    return out


SUITES = {"counting": entries, "multitask": multitask_entries}


def run(command: list[str]) -> float:
    print("$", shlex.join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    return time.perf_counter() - started


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
    }


def portable(command: list[str]) -> str:
    """The command as a user would type it: no machine paths."""
    text = shlex.join(str(c) for c in command)
    return (
        text.replace(str(ROOT) + "/", "")
        .replace(str(data_dir()), "$SELFSUP_DATA")
        .replace(sys.executable, "python")
    )


def scrub(folder: Path) -> None:
    """Rewrite machine paths in the written reports as portable ones."""
    for path in folder.rglob("*"):
        if path.suffix in (".md", ".json"):
            text = path.read_text()
            text = text.replace(str(data_dir()), "$SELFSUP_DATA").replace(str(ROOT) + "/", "")
            path.write_text(text.replace(str(Path.home()), "~"))


def bench_entry(name: str, entry: dict, steps: int | None) -> dict:
    selfsup = [sys.executable, "-m", "selfsup"]
    out, report_dir = WORK / name, RESULTS / name
    steps = steps or entry["steps"]
    cache = ["--cache-dir", str(WORK / "cache"), "--quiet"]
    data = ["--data", str(entry["probe_train"]), "--test", str(entry["probe_test"])]
    commands = {
        "train": [
            *selfsup,
            "train",
            entry.get("task", "counting"),
            "--data",
            str(entry["pretrain"]),
            *entry.get("extra", []),
            "--out",
            str(out),
            "--config",
            entry["config"],
            "--steps",
            str(steps),
            "--quiet",
            *entry["overrides"],
        ],
        "linear": [
            *selfsup,
            "report",
            str(out),
            *data,
            *cache,
            "--out",
            str(report_dir / "linear"),
        ],
        "knn": [
            *selfsup,
            "report",
            str(out),
            *data,
            *cache,
            "--protocol",
            "knn",
            "--out",
            str(report_dir / "knn"),
        ],
        # Features are cached by now: this times the probes alone.
        "linear_cached": [
            *selfsup,
            "eval",
            "linear",
            str(out),
            *data,
            *cache,
            "--json",
            str(WORK / f"{name}_linear_cached.json"),
        ],
    }
    seconds = {key: round(run(command), 1) for key, command in commands.items()}
    scrub(report_dir)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    linear = json.loads((report_dir / "linear" / "results.json").read_text())
    knn = json.loads((report_dir / "knn" / "results.json").read_text())
    cached = json.loads((WORK / f"{name}_linear_cached.json").read_text())
    return {
        "entry": name,
        "steps": steps,
        "seconds": seconds,
        "images_per_sec": float(np.median([m["images_per_sec"] for m in metrics])),
        "final_loss": metrics[-1]["loss"],
        "probe_seconds_on_cached_features": cached["probe_seconds"],
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
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps({k: result[k] for k in ("entry", "steps", "seconds")}))


if __name__ == "__main__":
    main()
