"""Graph-building cost: k-means, within-cluster kNN and 4-clique mining on random 128-d
vectors, 10^5 and 10^6 of them, each size in a fresh process so its peak memory is its own.

    python bench/graph.py [--sizes 100000 1000000]

Writes bench/results/graph.json (seconds per stage, peak resident memory, the machine).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS, machine


def measure(size: int) -> dict:
    from selfsup.graph.mining import cluster_and_search, four_cliques

    vectors = np.random.default_rng(0).standard_normal((size, 128), dtype=np.float32)
    clusters = round(size**0.5)
    start = time.perf_counter()
    _, neighbours = cluster_and_search(vectors, clusters, 10)
    searched = time.perf_counter()
    cliques = four_cliques(neighbours)
    done = time.perf_counter()
    return {
        "vectors": size,
        "dims": 128,
        "clusters": clusters,
        "neighbours": 10,
        "kmeans_and_knn_seconds": round(searched - start, 1),
        "clique_seconds": round(done - searched, 1),
        "cliques": len(cliques),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size)], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "command": "python bench/graph.py", "machine": machine()}
    (RESULTS / "graph.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
