"""Two gloo processes on the CPU train one run with DDP and end with identical weights; when one
of them crashes or hangs, the other stops with a clear message instead of waiting forever."""

import os
import socket
import subprocess
import sys
import textwrap
import time

import torch

from selfsup import checkpoint
from tests.helpers import SMALL_RESNET, TINY

WORKER = textwrap.dedent("""
    import sys
    import torch
    from selfsup import dist
    from selfsup.config import parse_overrides, resolve
    from selfsup.tasks import task_config_class
    from selfsup.train import train

    data, out, *overrides = sys.argv[1:]
    cfg = resolve(parse_overrides([f"data.path={data}", *overrides]), task_config_class)
    run = train(cfg, out, progress=False)
    state = {k: v.detach().clone() for k, v in run.model.named_parameters()}
    rows = run.data.streams[0].stream.order.rows(0).tolist()
    torch.save({"state": state, "world": dist.world_size(), "batch_rows": rows},
               f"{out}/rank{dist.rank()}.pt")
    dist.shutdown()
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_end_with_identical_weights(tiny_npz, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        str(script),
        str(tiny_npz),
        str(out),
        *TINY,
        "train.steps=4",
        "data.batch_size=8",
        "checkpoint.every=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes share two cores
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    # Each rank read its own half of the global batch.
    assert not set(ranks[0]["batch_rows"]) & set(ranks[1]["batch_rows"])
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Rank 0 wrote the checkpoint, and its weights are the trained ones.
    saved = checkpoint.load(out / "checkpoints" / "last.pt")
    assert saved["step"] == 4
    assert all(torch.equal(saved["model"][k], a[k]) for k in a)
    initial = {k: v for k, v in a.items() if k.endswith("weight")}
    assert any(not torch.equal(initial[k], torch.zeros_like(initial[k])) for k in initial)


# Both ranks run the CLI; the faulty one fails as step 3 starts, either by crashing or by
# hanging (alive, but never joining the next all-reduce), and notes the time it did so.
FAULTY_WORKER = textwrap.dedent("""
    import os
    import sys
    import time

    import selfsup.train as loop
    from selfsup.cli import main

    fault, faulty_rank, fault_time_file, *argv = sys.argv[1:]
    learning_rate = loop.learning_rate

    def learning_rate_with_fault(step, total, optim, peak=None):
        if step == 3 and os.environ["RANK"] == faulty_rank:
            with open(fault_time_file, "w") as file:
                file.write(str(time.time()))
            if fault == "crash":
                raise RuntimeError("injected crash")
            time.sleep(600)
        return learning_rate(step, total, optim, peak)

    loop.learning_rate = learning_rate_with_fault
    sys.exit(main(argv))
""")


def start_faulty_pair(script, data, folder, fault: str, faulty_rank: int) -> list:
    """Two gloo ranks started by hand, not by torchrun: torchrun's agent would itself kill the
    survivor when a worker fails, hiding whether selfsup stops on its own."""
    port = free_port()
    args = [str(script), fault, str(faulty_rank), str(folder / "fault_time")]
    train = ["train", "counting", "--data", str(data), "--out", str(folder / "run"), "--quiet"]
    settings = [*TINY, *SMALL_RESNET, "data.batch_size=8", "train.steps=20"]
    processes = []
    for rank in (0, 1):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        command = [sys.executable, *args, *train, *settings, "train.dist_timeout=10"]
        processes.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
    return processes


def test_survivor_stops_with_a_clear_message_when_a_rank_crashes_or_hangs(tiny_npz, tmp_path):
    """Rank 1 crashes in one run, rank 0 (the rendezvous host) hangs in another: the other
    rank exits non-zero with one line naming the cause, a few seconds after the fault (a
    crash is seen at once; a hang after train.dist_timeout=10 s), instead of hanging."""
    script = tmp_path / "worker.py"
    script.write_text(FAULTY_WORKER)
    scenarios = {"crash": 1, "hang": 0}  # fault -> faulty rank
    pairs = {}
    try:
        for fault, faulty_rank in scenarios.items():
            (tmp_path / fault).mkdir()
            pairs[fault] = start_faulty_pair(script, tiny_npz, tmp_path / fault, fault, faulty_rank)
        for fault, faulty_rank in scenarios.items():
            survivor = pairs[fault][1 - faulty_rank]
            _, stderr = survivor.communicate(timeout=240)
            stopped = time.time()
            fault_time = float((tmp_path / fault / "fault_time").read_text())
            assert survivor.returncode == 1, stderr[-3000:]
            assert stopped - fault_time < 60, (fault, stopped - fault_time)
            assert f"selfsup: error: rank {1 - faulty_rank} of 2: another process" in stderr
            assert "train.dist_timeout=10 s" in stderr and "Traceback" not in stderr
    finally:
        for process in (p for pair in pairs.values() for p in pair):
            process.kill()
            process.communicate()
