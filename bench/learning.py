"""Learning per CPU-minute: kNN accuracy on CIFAR-10 of every pretext task after the same CPU
budget, beside random initialisation and LightlySSL's SimCLR.

    python bench/learning.py            # 600 CPU-s each, 2 at a time -> bench/results/learning.json
    python bench/learning.py --quick    # tiny budget and data: a smoke run
    python bench/learning.py --only counting simclr-lightly --budget 300

Each contender trains in its own one-thread process for `--budget` CPU seconds, then a
weighted kNN on its pooled final layer scores it (docs/performance.md has the details).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from harness import record as rec
from harness import stepper as st
from harness.data import subset_npz
from harness.peer import PeerSimCLR, decode_pil
from harness.runner import PROFILES, Sizes, finish, run_all

from selfsup.runtime import resolve_device, resolve_precision

WARMUP_STEPS = 3  # untimed first steps: caches fill, the heap (train.heap=reuse) settles
TIMED_STEPS = 2  # at least this many steps timed after them to size each schedule
TIMED_SECONDS = 20.0  # and this much CPU time (at most a tenth of the budget): a 0.06 s step
# timed twice misjudged relative position's rate by a third
LEARNING_SIZES = ("budget", "train_images", "test_images", "batch")  # what the rows depend on
# name: (kind, task, label). "ours" trains the task's command (a TASKS name or INFONCE, the
# peer comparison's step), "random" leaves its backbone untrained, "peer" is LightlySSL's.
CONTENDERS = {
    **{task: ("ours", task, task) for task in st.TASKS},
    st.INFONCE: ("ours", st.INFONCE, "exemplar, InfoNCE, ResNet-18 (the peer's setup)"),
    "simclr-lightly": ("peer", None, "LightlySSL SimCLR, ResNet-18"),
    "random-alexnet_small": ("random", "counting", "random init: counting's AlexNet"),
    "random-multitask-trunk": ("random", "exemplar", "random init: multi-task trunk"),
    "random-resnet18": ("random", st.INFONCE, "random init: ResNet-18"),
}


def affordable_steps(step: Callable[[], int], budget: float) -> int:
    """The steps `budget` CPU seconds afford at the rate of `step` (a throwaway copy's):
    WARMUP_STEPS untimed, then steps timed until there are at least TIMED_STEPS of them and
    TIMED_SECONDS (at most budget / 10) of CPU time."""
    for _ in range(WARMUP_STEPS):
        step()
    started, steps = time.process_time(), 0
    while steps < TIMED_STEPS or time.process_time() - started < min(TIMED_SECONDS, budget / 10):
        step()
        steps += 1
    return max(1, math.floor(budget * steps / (time.process_time() - started)))


def train_on_budget(step: Callable[[], int], budget: float, planned: int) -> dict:
    """Step until `budget` CPU seconds are spent or the `planned` schedule ends."""
    cpu, wall = time.process_time(), time.perf_counter()
    steps = images = 0
    while steps < planned and time.process_time() - cpu < budget:
        images += step()
        steps += 1
    return {
        "steps": steps,
        "planned_steps": planned,
        "images": images,
        "cpu_seconds": round(time.process_time() - cpu, 1),
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }


def train_ours(argv: list[str], budget: float) -> tuple[torch.nn.Module, dict]:
    """Our task's command on `budget` CPU seconds, its cosine schedule over the steps they
    afford (warm-up at most a tenth of them)."""
    with st.run_folder() as folder:
        planned = affordable_steps(st.LoopStepper(st.loop_config(argv), folder).full, budget)
    warmup = min(st.loop_config(argv).optim.warmup_steps, planned // 10)
    kept = [a for a in argv if not a.startswith(("train.steps=", "optim.warmup_steps="))]
    argv = [*kept, f"train.steps={planned}", f"optim.warmup_steps={warmup}"]
    with st.run_folder() as folder:
        stepper = st.LoopStepper(st.loop_config(argv), folder)
        row = train_on_budget(stepper.full, budget, planned)
    batch = stepper.run.cfg.data.batch_size
    return stepper.run.model.backbone, {"command": st.command_text(argv), "batch": batch, **row}


def train_peer(setup: tuple, data: Path, batch: int, budget: float) -> tuple[PeerSimCLR, dict]:
    """LightlySSL's SimCLR on `budget` CPU seconds; `setup`: (device, autocast dtype)."""
    pil = decode_pil(data)
    planned = affordable_steps(PeerSimCLR(pil, batch, 0, *setup).full, budget)
    peer = PeerSimCLR(pil, batch, 0, *setup)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(peer.optimizer, T_max=planned)

    def step() -> int:
        images = peer.full()
        schedule.step()
        return images

    row = train_on_budget(step, budget, planned)
    return peer, {"batch": batch, "dataloader_workers": 0, "schedule": "cosine", **row}


def run_one(name: str, sizes: Sizes) -> dict:
    """Train (or not) and score contender `name` with a weighted kNN on its pooled final
    layer: its row."""
    from selfsup.config import dump
    from selfsup.data.trunk_input import input_of_config
    from selfsup.eval.knn import KnnSettings, weighted_knn
    from selfsup.eval.protocol import load_labelled
    from selfsup.features import extract_features
    from selfsup.runs import backbone_from_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    kind, task, label = CONTENDERS[name]
    device = resolve_device("auto")
    setup = (device, resolve_precision("auto", device))
    data = subset_npz(rec.cifar("train"), sizes.train_images)
    row: dict = {"name": name, "kind": kind, "label": label}
    if kind == "peer":
        peer, trained = train_peer(setup, data, sizes.peer_batch, sizes.budget)
        features, layer = peer.features, "backbone (512-d pooled)"
    else:
        # The peer comparison's step times a constant lr; here it learns, cosine like the rest.
        argv = st.task_argv(task, data, sizes, schedule="cosine")
        cfg = st.loop_config(argv)
        if kind == "ours":
            backbone, trained = train_ours(argv, sizes.budget)
        else:
            backbone = backbone_from_config(cfg.backbone)
            trained = {"steps": 0, "cpu_seconds": 0.0}
        layer = backbone.layer_names[-1]
        # Fed as its run's input record says (colour, or lightness for colorization).
        common = {"device": device, "amp_dtype": setup[1], "progress": False, "max_dims": 0}
        common["trunk_input"] = input_of_config(dump(cfg))

        def features(images: torch.Tensor) -> torch.Tensor:
            return extract_features(backbone, images, [layer], **common)[layer]

        row["backbone"] = asdict(cfg.backbone)
    train = load_labelled(str(data), 32, progress=False)
    test = load_labelled(str(subset_npz(rec.cifar("test"), sizes.test_images)), 32, progress=False)
    started = time.perf_counter()
    settings = KnnSettings(k=200, temperature=0.1)
    bank = features(train.images)
    knn = weighted_knn(
        bank, train.labels, features(test.images), test.labels, train.num_classes, settings
    )
    row.update(
        trained,
        knn_layer=layer,
        knn_top1=round(100 * knn.top1, 2),
        knn=asdict(settings),
        feature_dims=bank.shape[1],
        eval_seconds=round(time.perf_counter() - started, 1),
    )
    return {**row, "train_images": len(train.labels), "test_images": len(test.labels)}


def plot(rows: dict[str, dict], path: Path, budget: float) -> None:
    ordered = sorted(rows.values(), key=lambda r: r["knn_top1"])
    colours = {"ours": "tab:blue", "peer": "tab:orange", "random": "tab:gray"}
    with rec.plotted(path, (7, 0.38 * len(ordered) + 1.2)) as axes:
        axes.barh(
            [r["label"] or r["name"] for r in ordered],
            [r["knn_top1"] for r in ordered],
            color=[colours[r["kind"]] for r in ordered],
        )
        for i, r in enumerate(ordered):
            axes.text(r["knn_top1"] + 0.3, i, f"{r['knn_top1']:.1f}", va="center", fontsize=8)
        axes.set_xlim(0, 1.12 * max(r["knn_top1"] for r in ordered))  # room for the labels
        axes.set_xlabel("CIFAR-10 kNN top-1 (%)")
        axes.set_title(f"After {budget / 60:g} CPU-minutes of training (one core each)")
        axes.tick_params(axis="y", labelsize=8)


def main() -> None:
    p = rec.parser(__doc__, "--quick", only=CONTENDERS)
    p.add_argument("--budget", type=float, help="CPU seconds of training each (default 600)")
    p.add_argument("--jobs", type=int, default=2, help="contenders run at once")
    p.add_argument("--one", choices=sorted(CONTENDERS), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help="results file (default by mode)")
    args = p.parse_args()
    sizes = PROFILES["quick" if args.quick else "cpu"]
    args.budget = args.budget or sizes.budget
    sizes = replace(sizes, budget=args.budget)
    if not rec.cifar("train").exists():
        sys.exit(f"CIFAR-10 not found at {rec.cifar('train')}; set SELFSUP_DATA")
    if args.one:  # a child process: its row, as the last line it prints
        print(json.dumps(run_one(args.one, sizes)))
        return
    names = args.only or list(CONTENDERS)
    if "simclr-lightly" in names:
        try:
            import lightly  # noqa: F401
        except ImportError:
            rec.say("  skipped simclr-lightly: pip install -e '.[bench]'")
            names.remove("simclr-lightly")
    out = rec.results_file("learning", args.quick, args.out)
    results = rec.earlier(out, args.only)
    if results.get("budget_cpu_seconds", args.budget) != args.budget:
        sys.exit(f"{out} holds a {results['budget_cpu_seconds']} s budget; rerun all or match it")
    rows, started = results.get("rows", {}), time.perf_counter()
    figure = out.parent / out.stem / "knn_after_budget.png"

    def launch(name: str) -> dict:
        """One contender in a one-thread child process."""
        argv = ["--one", name, "--budget", args.budget, *(["--quick"] if args.quick else [])]
        row = rec.in_child(__file__, argv, threads=1)
        rec.say(
            f"  {name}: {row['steps']} steps in {row['cpu_seconds']} CPU-s, kNN {row['knn_top1']} %"
        )
        return row

    def save(name: str, row: dict) -> None:  # after each contender: a stopped run keeps them
        if "error" in row:
            return
        rows[name] = row
        plot(rows, figure, args.budget)
        rec.write_json(out, {
            "what": "CIFAR-10 kNN top-1 (k=200, T=0.1, cosine, final layer pooled) of each "
            "contender after the same CPU budget of training, one thread per contender",
            "budget_cpu_seconds": args.budget,
            "sizes": {size: getattr(sizes, size) for size in LEARNING_SIZES},
            "command": rec.portable(["python", "bench/learning.py", *sys.argv[1:]]),
            "seconds": round(time.perf_counter() - started, 1),
            "machine": {**rec.machine(), "threads": 1, "jobs_at_once": args.jobs},
            "plot": rec.portable([figure]),
            "rows": rows,
        })  # fmt: skip

    failed = run_all(names, launch, save, args.jobs)
    if rows:
        best = max(rows.values(), key=lambda r: r["knn_top1"])
        print(f"wrote {rec.portable([out])}; best: {best['name']} {best['knn_top1']:.1f} %")
    finish(failed, "contenders")


if __name__ == "__main__":
    main()
