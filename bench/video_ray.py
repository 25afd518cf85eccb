"""Patch-pipeline throughput on a local Ray cluster of 1 and 2 CPUs, against one process and
the process pool (`--workers 2`): frames/s of `selfsup video patches` at 240 px on the five
classic DAVIS 2016 clips.

    python bench/video_ray.py      # ~3 min on 2 idle cores; needs pip install 'selfsup[ray]'

Each Ray row starts its cluster and its worker processes first (each imports selfsup, OpenCV
and PyTorch once; timed apart, as a real cluster serves many videos), then times the whole
command. The last row mines the same clips in chunks of 20 frames (`--chunk-frames`), two or
three tasks per clip. Results go to `bench/results/video_ray.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from harness.record import RESULTS, WORK, data_dir, machine, parser, portable, write_json

CLIPS = ("blackswan", "car-shadow", "drift-straight", "horsejump-high", "motocross-jump")


def timed(argv: list[str]) -> float:
    from selfsup.cli import main

    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"selfsup {' '.join(argv)}: exit code {code}")
    return seconds


def start_worker() -> int:
    """What a worker imports before its first video, and a second of work so that every
    worker of the cluster is started, not one worker twice."""
    import selfsup.video.patches  # noqa: F401

    time.sleep(1)
    return os.getpid()


def main() -> None:
    args = parser(__doc__).parse_args()
    del args
    import ray

    root = data_dir() / "video" / "davis2016" / "JPEGImages" / "480p"
    videos = [str(root / clip) for clip in CLIPS]
    work = WORK / "video_ray"
    shutil.rmtree(work, ignore_errors=True)
    rows, frames = [], None

    def row(name: str, extra: list[str], seconds_start: float | None = None) -> None:
        nonlocal frames
        out = work / name
        argv = ["video", "patches", *videos, "--out", str(out), "--quiet", *extra]
        seconds = timed(argv)
        summary = (out / "summary.json").read_text()
        count = sum(v["frames"] for v in json.loads(summary)["videos"])
        frames = frames or count
        rows.append(
            {
                "row": name,
                "command": portable(["selfsup", *argv]),
                "seconds": round(seconds, 1),
                "frames": count,
                "frames_per_s": round(count / seconds, 1),
                **({"cluster_start_s": round(seconds_start, 1)} if seconds_start else {}),
            }
        )
        print(rows[-1], flush=True)

    row("one process", [])
    row("process pool, 2 workers", ["--workers", "2"])
    for cpus, chunks in ((1, []), (2, []), (2, ["--chunk-frames", "20"])):
        start = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        warm = ray.remote(num_cpus=1)(start_worker)
        ray.get([warm.remote() for _ in range(cpus)])  # one busy task per worker: both start
        started = time.perf_counter() - start
        name = f"ray, {cpus} worker{'s' * (cpus > 1)}" + (", chunks of 20 frames" * bool(chunks))
        row(name, ["--ray", "local", *chunks], started)
        ray.shutdown()
    write_json(
        RESULTS / "video_ray.json",
        {
            "machine": machine(),
            "load_average_at_end": list(os.getloadavg()),
            "clips": list(CLIPS),
            "size": 240,
            "rows": rows,
            "python": sys.version.split()[0],
            "ray": ray.__version__,
        },
    )
    print(f"wrote {RESULTS / 'video_ray.json'}")


if __name__ == "__main__":
    main()
