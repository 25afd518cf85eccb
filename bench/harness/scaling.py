"""scaling: images/s with 1 and 2 DDP processes, and the time of feature extraction, the
linear probe and graph building against data size, plotted log-log."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .commands import TASKS, loop_config, run_folder, train_argv
from .data import subset_npz
from .record import RESULTS, cifar, figures, plotted, portable, run, say
from .runner import Bench


def ddp_throughput(bench: Bench, processes: int, data: Path) -> dict:
    """Counting trained by the CLI in `processes` processes (torchrun, gloo on CPU), each
    with cores / processes threads; images/s from metrics.jsonl, first window dropped."""
    sizes = bench.sizes
    threads = max(1, (os.cpu_count() or 1) // processes)
    argv = train_argv(TASKS["counting"], data, sizes.batch, [])
    argv += [
        "--steps", str(sizes.ddp_steps), "--quiet", f"train.log_every={sizes.ddp_log_every}",
        f"checkpoint.every={sizes.ddp_steps}",
    ]  # fmt: skip
    # torchrun's --standalone rendezvous picks a free port of its own.
    torchrun = ["--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    shown = ["torchrun", *torchrun, "-m", "selfsup", *argv] if torchrun else ["selfsup", *argv]
    with run_folder() as folder:
        out = [str(folder / "run") if arg == "runs/perf" else arg for arg in argv]
        launcher = ["-m", "torch.distributed.run", *torchrun] if torchrun else []
        wall = run([sys.executable, *launcher, "-m", "selfsup", *out], threads=threads).seconds
        lines = (folder / "run" / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["images_per_sec"] for line in lines][1:]
    batch = loop_config(argv).data.batch_size
    return {
        "processes": processes,
        "threads_per_process": threads,
        "global_batch": batch * processes,
        "images_per_sec": round(float(np.median(rates)), 2),
        "windows": rates,
        "wall_seconds": round(wall, 1),
        "command": f"OMP_NUM_THREADS={threads} {portable(shown)}",
    }


def eval_scaling(bench: Bench) -> list[dict]:
    """Feature extraction (every probe layer of a random-init counting backbone, as `selfsup
    eval linear` reads them) and one layer's linear probe, against the number of images."""
    from selfsup.data.trunk_input import TrunkInput
    from selfsup.eval.linear import train_linear_probe
    from selfsup.eval.protocol import load_labelled
    from selfsup.features import extract_features
    from selfsup.runs import backbone_from_config

    sizes = bench.sizes
    train_path = subset_npz(cifar("train"), max(sizes.eval_sizes))
    train = load_labelled(str(train_path), 32, progress=False)
    test = load_labelled(str(subset_npz(cifar("test"), sizes.probe_test)), 32, progress=False)
    cfg = loop_config(train_argv(TASKS["counting"], cifar("train"), None, []))
    torch.manual_seed(0)
    backbone = backbone_from_config(cfg.backbone)
    layers = list(backbone.probe_layers)
    probed = layers[-1]
    common = {
        "device": bench.device,
        "amp_dtype": bench.amp_dtype,
        "progress": False,
        "trunk_input": TrunkInput(),  # a counting trunk: colour images
    }
    # Also the warm-up: the first pass pays for thread pools and convolution primitives.
    test_features = extract_features(backbone, test.images, [probed], **common)[probed]
    order = torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))
    rows = []
    for count in sizes.eval_sizes:
        chosen = order[:count]  # random rows: the CIFAR-10 files are sorted by class
        started = time.perf_counter()
        features = extract_features(backbone, train.images[chosen], layers, **common)
        extracted = time.perf_counter()
        probe = train_linear_probe(
            features[probed], train.labels[chosen], test_features, test.labels, train.num_classes
        )
        rows.append({
            "images": count,
            "feature_seconds": round(extracted - started, 3),
            "feature_layers": layers,
            "probe_seconds": round(time.perf_counter() - extracted, 3),
            "probe_layer": probed,
            "probe_dims": probe.dims,
            "probe_lbfgs_steps": probe.steps,
        })  # fmt: skip
        say(f"  {figures(rows[-1], 'images', 'feature_seconds', 'probe_seconds', 'probe_dims')}")
    return rows


def graph_cost(vectors: int) -> dict:
    """k-means + within-cluster kNN and 4-clique mining on random 128-d vectors (sqrt(N)
    clusters, 10 neighbours): the graph-building cost bench/graph.py measures at scale."""
    from selfsup.graph.mining import cluster_and_search, four_cliques

    points = np.random.default_rng(0).standard_normal((vectors, 128), dtype=np.float32)
    clusters = round(vectors**0.5)
    started = time.perf_counter()
    _, neighbours = cluster_and_search(points, clusters, 10)
    searched = time.perf_counter()
    cliques = four_cliques(neighbours)
    return {
        "vectors": vectors,
        "dims": 128,
        "clusters": clusters,
        "neighbours": 10,
        "kmeans_and_knn_seconds": round(searched - started, 3),
        "clique_seconds": round(time.perf_counter() - searched, 3),
        "cliques": len(cliques),
    }


def graph_scaling(bench: Bench) -> list[dict]:
    graph_cost(min(bench.sizes.graph_sizes))  # warm-up: faiss's first call sets up threads
    rows = [{**graph_cost(n), "source": "bench/perf.py"} for n in bench.sizes.graph_sizes]
    recorded = RESULTS / "graph.json"  # 10^5 and 10^6 vectors, from bench/graph.py
    if recorded.exists():
        for row in json.loads(recorded.read_text())["rows"]:
            rows.append({**row, "source": "bench/results/graph.json"})
    for row in rows:
        say(f"  {figures(row, 'vectors', 'kmeans_and_knn_seconds', 'clique_seconds', 'source')}")
    return rows


def loglog_slope(x: list[float], y: list[float]) -> float | None:
    """Exponent b of y ~ x^b fitted on the positive points (None with fewer than two)."""
    points = [(a, b) for a, b in zip(x, y) if a > 0 and b > 0]
    if len(points) < 2:
        return None
    xs, ys = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return round(float(np.polyfit(xs, ys, 1)[0]), 2)


def plot_scaling(eval_rows: list[dict], graph_rows: list[dict], path: Path) -> dict:
    """Log-log seconds against data size; returns each curve's fitted exponent."""
    from matplotlib.ticker import NullFormatter

    images = [r["images"] for r in eval_rows]
    vectors = [r["vectors"] for r in graph_rows]
    curves = {
        "feature extraction (images)": (images, [r["feature_seconds"] for r in eval_rows]),
        "linear probe, one layer (images)": (images, [r["probe_seconds"] for r in eval_rows]),
        "graph: k-means + kNN (vectors)": (
            vectors,
            [r["kmeans_and_knn_seconds"] for r in graph_rows],
        ),
        "graph: 4-cliques (vectors)": (vectors, [r["clique_seconds"] for r in graph_rows]),
    }
    slopes = {}
    with plotted(path, (6.5, 4.5)) as axes:
        for label, (x, y) in curves.items():
            order = np.argsort(x)
            xs, ys = np.asarray(x)[order], np.asarray(y, dtype=float)[order]
            keep = ys > 0  # a log axis cannot show 0 s
            slopes[label] = loglog_slope(list(xs), list(ys))
            exponent = "" if slopes[label] is None else f" ~ N^{slopes[label]}"
            axes.plot(xs[keep], ys[keep], marker="o", label=f"{label}{exponent}")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.xaxis.set_minor_formatter(NullFormatter())  # no crowded labels
        axes.set_xlabel("images or vectors (N)")
        axes.set_ylabel("seconds")
        axes.set_title("Evaluation and graph cost against data size")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize=8)
    return slopes


def scaling_section(bench: Bench) -> dict:
    ddp = [ddp_throughput(bench, processes, bench.data["cifar"]) for processes in (1, 2)]
    for row in ddp:
        say(f"  {figures(row, 'processes', 'threads_per_process', 'images_per_sec')}")
    eval_rows = eval_scaling(bench)
    graph_rows = graph_scaling(bench)
    plot = bench.figures / "scaling.png"
    slopes = plot_scaling(eval_rows, graph_rows, plot)
    return {
        "what": "counting images/s with 1 and 2 DDP processes (same per-process batch); "
        "feature extraction, linear probe and graph building seconds against data size",
        "ddp": ddp,
        "ddp_speedup": round(ddp[1]["images_per_sec"] / ddp[0]["images_per_sec"], 3),
        "evaluation": eval_rows,
        "graph": graph_rows,
        "loglog_exponents": slopes,
        "plot": portable([plot]),
    }
