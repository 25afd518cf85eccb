"""Graph-building cost: k-means, within-cluster kNN and 4-clique mining on random 128-d
vectors, 10^5 and 10^6 of them, each size in a fresh process so its peak memory is its own.

    python bench/graph.py [--sizes 100000 1000000]

Writes bench/results/graph.json (seconds per stage, peak resident memory, the machine).
"""

from __future__ import annotations

import argparse
import json
import resource

from harness.record import RESULTS, in_child, machine, parser, say, write_json
from harness.scaling import graph_cost


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child process
    args = p.parse_args()
    if args.one:  # its row, as the last line it prints
        peak = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(json.dumps({**graph_cost(args.one), "peak_rss_mib": peak}))
        return
    rows = []
    for size in args.sizes:
        rows.append(in_child(__file__, ["--one", size]))
        say(str(rows[-1]))
    result = {"rows": rows, "command": "python bench/graph.py", "machine": machine()}
    write_json(RESULTS / "graph.json", result)


if __name__ == "__main__":
    main()
