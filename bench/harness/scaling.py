"""scaling: images/s with 1 and 2 DDP processes, and the time of feature extraction, the
linear probe and graph building against data size, plotted log-log."""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch

from .data import subset_npz
from .record import RESULTS, cifar, figures, plotted, portable, run, say
from .rows import metrics
from .runner import Bench
from .stepper import TASKS, loop_config, run_folder, train_argv


def ddp_throughput(bench: Bench, processes: int) -> dict:
    """Counting trained by the CLI in `processes` processes (torchrun, gloo on CPU), each
    with cores / processes threads; images/s from metrics.jsonl, first window dropped."""
    sizes = bench.sizes
    threads = max(1, (os.cpu_count() or 1) // processes)
    argv = train_argv(TASKS["counting"], bench.data["cifar"], sizes.batch, [])
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
        rates = [line["images_per_sec"] for line in metrics(folder / "run")][1:]
    return {
        "processes": processes,
        "threads_per_process": threads,
        "global_batch": loop_config(argv).data.batch_size * processes,
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
    train = load_labelled(
        str(subset_npz(cifar("train"), max(sizes.eval_sizes))), 32, progress=False
    )
    test = load_labelled(str(subset_npz(cifar("test"), sizes.probe_test)), 32, progress=False)
    torch.manual_seed(0)
    cfg = loop_config(train_argv(TASKS["counting"], cifar("train"), None, []))
    backbone = backbone_from_config(cfg.backbone)
    layers = list(backbone.probe_layers)
    probed = layers[-1]
    common = {"device": bench.device, "amp_dtype": bench.amp_dtype, "progress": False}
    common["trunk_input"] = TrunkInput()  # a counting trunk: colour images
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
    """graph_cost at the profile's sizes, then the larger ones bench/graph.py recorded."""
    graph_cost(min(bench.sizes.graph_sizes))  # warm-up: faiss's first call sets up threads
    rows = [{**graph_cost(n), "source": "bench/perf.py"} for n in bench.sizes.graph_sizes]
    recorded = RESULTS / "graph.json"  # 10^5 and 10^6 vectors, from bench/graph.py
    if recorded.exists():
        rows += [{**row, "source": "bench/results/graph.json"}
                 for row in json.loads(recorded.read_text())["rows"]]  # fmt: skip
    for row in rows:
        say(f"  {figures(row, 'vectors', 'kmeans_and_knn_seconds', 'clique_seconds', 'source')}")
    return rows


def plot_scaling(curves: dict[str, tuple[list, list]], path) -> dict:
    """Log-log seconds against data size; returns each curve's fitted exponent b of
    seconds ~ N^b (on its positive points; None with fewer than two)."""
    from matplotlib.ticker import NullFormatter

    slopes = {}
    with plotted(path, (6.5, 4.5)) as axes:
        for label, (x, y) in curves.items():
            order = np.argsort(x)
            xs, ys = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
            keep = (xs > 0) & (ys > 0)  # a log axis cannot show 0 s
            fit = np.polyfit(np.log(xs[keep]), np.log(ys[keep]), 1) if keep.sum() > 1 else None
            slopes[label] = None if fit is None else round(float(fit[0]), 2)
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
    ddp = [ddp_throughput(bench, processes) for processes in (1, 2)]
    for row in ddp:
        say(f"  {figures(row, 'processes', 'threads_per_process', 'images_per_sec')}")
    evals, graphs = eval_scaling(bench), graph_scaling(bench)
    images, vectors = [r["images"] for r in evals], [r["vectors"] for r in graphs]
    plot = bench.figures / "scaling.png"
    slopes = plot_scaling({
        "feature extraction (images)": (images, [r["feature_seconds"] for r in evals]),
        "linear probe, one layer (images)": (images, [r["probe_seconds"] for r in evals]),
        "graph: k-means + kNN (vectors)": (vectors, [r["kmeans_and_knn_seconds"] for r in graphs]),
        "graph: 4-cliques (vectors)": (vectors, [r["clique_seconds"] for r in graphs]),
    }, plot)  # fmt: skip
    return {
        "what": "counting images/s with 1 and 2 DDP processes (same per-process batch); "
        "feature extraction, linear probe and graph building seconds against data size",
        "ddp": ddp,
        "ddp_speedup": round(ddp[1]["images_per_sec"] / ddp[0]["images_per_sec"], 3),
        "evaluation": evals,
        "graph": graphs,
        "loglog_exponents": slopes,
        "plot": portable([plot]),
    }
