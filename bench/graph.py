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

from harness.record import RESULTS, machine, write_json
from harness.scaling import graph_cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one:
        row = graph_cost(args.one)
        row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps(row))
        return
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size)], check=True,
                             capture_output=True, text=True).stdout  # fmt: skip
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    result = {"rows": rows, "command": "python bench/graph.py", "machine": machine()}
    write_json(RESULTS / "graph.json", result)


if __name__ == "__main__":
    main()
