"""Benchmarks: pretrain for a fixed step budget, probe every layer, compare with random init.

    python bench/run.py                     # every entry
    python bench/run.py --only counting_cifar10 --steps 200

Data comes from `$SELFSUP_DATA` (default: `../shared/data` beside the repository), laid out
as described in the README's Benchmarks section. Results go to `bench/results/<entry>.json`
with the commands, the machine and the timings; runs go to `bench/work/` (git-ignored).
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
    """name -> what to pretrain on and how to probe it."""
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


def bench_entry(name: str, entry: dict, steps: int | None) -> dict:
    selfsup = [sys.executable, "-m", "selfsup"]
    out = WORK / name
    steps = steps or entry["steps"]
    train_cmd = [
        *selfsup,
        "train",
        "counting",
        "--data",
        str(entry["pretrain"]),
        "--out",
        str(out),
        "--config",
        entry["config"],
        "--steps",
        str(steps),
        "--quiet",
        *entry["overrides"],
    ]
    train_seconds = run(train_cmd)
    results, commands = {}, {"train": train_cmd}
    for label, extra in (("pretrained", []), ("random_init", ["--random-init"])):
        json_path = WORK / f"{name}_{label}.json"
        cmd = [
            *selfsup,
            "eval",
            "linear",
            str(out),
            "--data",
            str(entry["probe_train"]),
            "--test",
            str(entry["probe_test"]),
            "--json",
            str(json_path),
            "--quiet",
            *extra,
        ]
        run(cmd)
        results[label] = json.loads(json_path.read_text())
        commands[f"eval_{label}"] = cmd
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "entry": name,
        "steps": steps,
        "train_seconds": round(train_seconds, 1),
        "images_per_sec": float(np.median([m["images_per_sec"] for m in metrics])),
        "final_loss": metrics[-1]["loss"],
        "machine": machine(),
        "commands": {
            k: shlex.join(str(c) for c in v)
            .replace(str(ROOT) + "/", "")
            .replace(str(data_dir()), "$SELFSUP_DATA")
            for k, v in commands.items()
        },
        "linear_probe": {
            label: {row["layer"]: row for row in r["layers"]} for label, r in results.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="entries to run (default: all)")
    parser.add_argument("--steps", type=int, help="override every entry's pretraining steps")
    args = parser.parse_args()
    data = data_dir()
    if not (data / "cifar10").is_dir():
        sys.exit(f"benchmark data not found at {data}; set SELFSUP_DATA")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, entry in entries(data).items():
        if args.only and name not in args.only:
            continue
        result = bench_entry(name, entry, args.steps)
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
        print(json.dumps({k: result[k] for k in ("entry", "steps", "train_seconds")}))


if __name__ == "__main__":
    main()
