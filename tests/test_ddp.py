"""Two gloo processes on the CPU train one run with DDP and end with identical weights."""

import os
import socket
import subprocess
import sys
import textwrap

import torch

from selfsup import checkpoint
from tests.helpers import TINY

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
    torch.save({"state": state, "world": dist.world_size(),
                "batch_rows": run.stream._rows(0).tolist()}, f"{out}/rank{dist.rank()}.pt")
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
