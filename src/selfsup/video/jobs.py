"""Which videos a mining run does, and where: shards of the video list, outputs per video,
failures reported at the end, one process, a pool of processes, or a Ray cluster.

`video masks` and `video patches` write each video's outputs under `--out` atomically (a
file, or a folder renamed into place whole) before they count it done. A run skips the videos
whose outputs are there, so a rerun after a crash, a killed job or a lost node finishes only
the rest, and runs over disjoint shards (`--shard I/N`, a SLURM job array) fill one `--out`.

A video that fails does not stop the others: each failure is kept with its file and its
error, and the run ends with `VideoFailures` (exit status 2) naming them all.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from selfsup.config import ConfigError
from selfsup.video.reader import VideoError, video_name

RAY_MISSING = (
    "--ray needs the `ray` package, an optional extra: pip install 'selfsup[ray]' "
    "(or pip install ray)"
)
GIB = 2**30


@dataclass(frozen=True)
class Shard:
    """The `index`-th (0-based) of `count` disjoint parts of a video list."""

    index: int = 0
    count: int = 1

    def holds(self, video: Path) -> bool:
        """Whether `video` is in this part: by a hash of its name, the name its outputs are
        written under, so every machine and every ordering of the list agrees."""
        digest = hashlib.sha1(video_name(video).encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


EVERY_VIDEO = Shard(0, 1)


@dataclass(frozen=True)
class Piece:
    """What one task mines: a whole video, or a chunk of it: `frames` kept frames from kept
    frame `first` (None: to the end of the video)."""

    video: Path
    first: int = 0
    frames: int | None = None
    chunked: bool = False

    @property
    def name(self) -> str:
        """The name its outputs are written under: the video's, `<video>@<first frame>` for a
        chunk (zero-padded, so names sort in time order)."""
        base = video_name(self.video)
        return f"{base}@{self.first:07d}" if self.chunked else base

    def __str__(self) -> str:
        if not self.chunked:
            return str(self.video)
        last = "end" if self.frames is None else self.first + self.frames - 1
        return f"{self.video} (kept frames {self.first}-{last})"


def chunks(video: Path, frames: int, chunk: int) -> list[Piece]:
    """`video` of `frames` kept frames as pieces of `chunk` frames (0: one piece), the last
    reading to the end of the video (a container's frame count may be rounded). A remainder
    of one frame joins the chunk before it: motion needs two."""
    if chunk <= 0 or frames <= chunk:
        return [Piece(video)]
    starts = list(range(0, frames, chunk))
    if frames - starts[-1] < 2:
        starts.pop()
    return [
        Piece(video, start, chunk if start != starts[-1] else None, chunked=True)
        for start in starts
    ]


def parse_shard(text: str) -> Shard:
    """argparse type of `--shard I/N`: I from 0 to N - 1 (SLURM's `$SLURM_ARRAY_TASK_ID` with
    `--array=0-<N-1>`)."""
    import argparse

    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected I/N, the I-th of N parts counted from 0 (e.g. 0/4 ... 3/4)"
        )
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: N must be at least 1")
    if index >= count:
        raise argparse.ArgumentTypeError(
            f"{text!r}: I counts from 0, so it must be below N: 0/{count} ... {count - 1}/{count}"
        )
    return Shard(index, count)


@dataclass
class Failure:
    video: Path | Piece
    error: str


class VideoFailures(VideoError):
    """Some videos of a run failed; the others' outputs are written."""

    def __init__(self, failures: list[Failure], total: int, done: int):
        self.failures, self.done = failures, done
        lines = [f"{f.video}: {f.error}" for f in failures]
        head = f"{len(failures)} of {total} videos failed" if total > 1 else ""
        kept = f"; the {done} done are kept, a rerun retries only the failed" if done else ""
        super().__init__(f"{head}{kept}: {lines[0]}" if head else lines[0])
        self.details = lines


def report_failures(failures: list[Failure]) -> None:
    """One line per failed video, before the one-line error of the whole run."""
    if len(failures) > 1:
        for failure in failures:
            print(f"failed: {failure.video}: {failure.error}")


@dataclass
class Runner:
    """Where per-video work runs: `workers` local processes, or a Ray cluster at
    `ray_address` (`auto`, `local`, `HOST:PORT` or `ray://HOST:PORT`), one task per video
    asking for one CPU and `task_memory_gb` of memory."""

    workers: int = 1
    ray_address: str | None = None
    task_memory_gb: float = 2.0
    progress: bool = True


def run_videos(
    videos: list, work: Callable, args: tuple, runner: Runner, desc: str, key=video_name
) -> tuple[dict[str, dict], list[Failure]]:
    """`work(video, *args) -> dict` for every video (or `Piece`; it writes the outputs
    itself); returns the results by `key(video)`, and the failures. At most `in_flight`
    tasks are submitted at a time, so a list of 100,000 videos costs the driver (and the Ray
    scheduler) the memory of a few hundred tasks, not of every one."""
    if runner.ray_address is not None and videos:
        connect_ray(runner.ray_address)  # before the bar: Ray says where its dashboard is
    unit = "chunk" if any(isinstance(v, Piece) and v.chunked for v in videos) else "video"
    bar = tqdm(total=len(videos), desc=desc, unit=unit, disable=not runner.progress)
    results: dict[str, dict] = {}
    failures: list[Failure] = []

    def finished(video, outcome: dict) -> None:
        if "error" in outcome:
            failures.append(Failure(video, outcome["error"]))
            bar.set_postfix_str(f"{len(failures)} failed")
        else:
            results[key(video)] = outcome
        bar.update()

    try:
        if runner.ray_address is not None:
            run_on_ray(videos, work, args, runner, finished)
        elif runner.workers > 1 and len(videos) > 1:
            with ProcessPoolExecutor(runner.workers) as pool:
                in_flight(
                    videos,
                    lambda video: pool_submit(pool, work, video, args),
                    lambda futures: wait(futures, return_when=FIRST_COMPLETED)[0],
                    pooled_outcome,
                    2 * runner.workers,
                    finished,
                )
        else:
            for video in videos:
                finished(video, guarded(work, video, *args))
    finally:
        bar.close()
    order = {key(v): i for i, v in enumerate(videos)}
    failures.sort(key=lambda f: order[key(f.video)])
    return results, failures


def in_flight(
    videos: list, submit: Callable, gather: Callable, outcome: Callable, limit: int,
    finished: Callable,
) -> None:  # fmt: skip
    """Run `videos` with at most `limit` submitted and not yet finished: `submit(video)` gives
    a handle, `gather(handles)` the handles done (at least one), `outcome(handle)` its result."""
    queue, running = iter(videos), {}
    for video in queue:
        running[submit(video)] = video
        if len(running) >= limit:
            break
    while running:
        for handle in gather(list(running)):
            finished(running.pop(handle), outcome(handle))
            for video in queue:  # one new for each done
                running[submit(video)] = video
                break


def pool_submit(pool: ProcessPoolExecutor, work: Callable, video, args: tuple) -> Future:
    """`work(video, *args)` in the pool; once a worker has died the pool takes nothing more,
    and the video gets a future holding that error (it fails, the run goes on to the end)."""
    try:
        return pool.submit(guarded, work, video, *args)
    except BrokenProcessPool as err:
        future: Future = Future()
        future.set_exception(err)
        return future


def pooled_outcome(future) -> dict:
    """A pool worker's result; a worker that died (killed, out of memory) fails its video
    and breaks the pool, so the videos not yet done fail too: done ones stay, a rerun goes on."""
    try:
        return future.result()
    except Exception as err:
        return {"error": f"its worker process died ({type(err).__name__}: {err})"}


def guarded(work: Callable, video: Path, *args) -> dict:
    """`work`'s result, or {"error": message} for an error of this video's own (a bad file,
    a full disk): reported at the end of the run instead of stopping the others."""
    import cv2

    cv2.setNumThreads(1)  # one video per process: parallel processes, not contending threads
    try:
        return work(video, *args)
    except (ValueError, OSError, RuntimeError, MemoryError, cv2.error) as err:
        return {"error": str(err) or type(err).__name__}


def import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    return ray


def check_ray_address(address: str) -> str:
    """argparse type of `--ray ADDRESS`: `auto`, `local`, HOST:PORT or ray://HOST:PORT. A
    path here is a video given after `--ray`, taken as its address."""
    import argparse

    if address in ("auto", "local") or re.fullmatch(r"(ray://)?[\w.\-\[\]:]+:\d+", address):
        return address
    raise argparse.ArgumentTypeError(
        f"{address!r}: not a Ray address (auto, local, HOST:PORT or ray://HOST:PORT); to "
        "start or find a cluster by itself, put --ray after the videos or write --ray=auto"
    )


def connect_ray(address: str):
    """This process's Ray connection: the one it already has (a test's `ray.init`), a new
    local cluster for `local`, else the cluster at `address` (`auto`: RAY_ADDRESS, or the one
    started on this machine with `ray start --head`)."""
    ray = import_ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as err:
            raise ConfigError(
                f"--ray {address}: no Ray cluster found ({err}); start one with `ray start "
                "--head` (or give its HOST:PORT), or try --ray local"
            ) from None
    return ray


def run_on_ray(
    videos: list, work: Callable, args: tuple, runner: Runner, finished: Callable
) -> None:
    """One Ray task per video. A worker process or node that dies takes its task with it, and
    Ray runs the task again elsewhere (`max_retries`); the video's outputs appear atomically,
    so a task run twice leaves them once. Twice the cluster's CPUs are kept in flight: every
    core busy, the next task queued, and no scheduler holding 100,000 tasks."""
    ray = connect_ray(runner.ray_address or "auto")
    task = ray.remote(guarded).options(
        num_cpus=1, memory=int(runner.task_memory_gb * GIB), max_retries=3, name="selfsup-video"
    )

    def outcome(ref) -> dict:
        try:
            return ray.get(ref)
        except Exception as err:  # a worker or node lost more often than max_retries
            return {"error": f"failed on the Ray cluster: {type(err).__name__}: {err}"}

    limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    in_flight(
        videos,
        lambda video: task.remote(work, video, *args),
        lambda refs: ray.wait(refs, num_returns=1)[0],
        outcome,
        limit,
        finished,
    )
