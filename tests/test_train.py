import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfsup import checkpoint
from selfsup.cli import main
from selfsup.train import NonFiniteLossError, learning_rate, train
from tests.helpers import TINY, tiny_config


def weights(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path / "checkpoints" / "last.pt")["model"]


def test_run_folder_layout_and_metrics(tiny_npz, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=4", "checkpoint.every=2"), out, progress=False)
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.pt").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert {"loss", "lr", "images_per_sec", "equivariance", "contrast"} <= set(records[0])
    assert not list((out / "checkpoints").glob("*.tmp"))


def test_resume_continues_exactly(tiny_npz, tmp_path):
    """A run killed after step 4 (checkpoint at 3, metrics logged at 4) and rerun ends
    bitwise equal to an uninterrupted one, and logs each step once."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cfg = tiny_config(tiny_npz, "train.steps=6", "checkpoint.every=3")
    train(cfg, straight, progress=False)
    crash_at_step(cfg, resumed, step=4)
    assert checkpoint.load(resumed / "checkpoints" / "last.pt")["step"] == 3
    train(cfg, resumed, progress=False)
    a, b = weights(straight), weights(resumed)
    logged = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").open()]
    assert logged == [2, 4, 6]  # the step-4 line of the crashed part is not duplicated
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint.load(resumed / "checkpoints" / "last.pt")["step"] == 6


def crash_at_step(cfg, folder: Path, step: int) -> None:
    """Run training and crash as step `step` (0-based) starts, like a killed process."""
    import selfsup.train as loop

    original = loop.learning_rate

    def crash(current, total, optim):
        if current == step:
            raise KeyboardInterrupt
        return original(current, total, optim)

    loop.learning_rate = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, folder, progress=False)
    finally:
        loop.learning_rate = original


def test_rerun_with_more_steps_trains_on(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=2"), out, progress=False)
    train(tiny_config(tiny_npz, "train.steps=4"), out, progress=False)
    assert "resumed from step 2" in capsys.readouterr().out
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] == 4


def test_resume_from_checkpoint_without_lr_scale(tiny_npz, tmp_path):
    """The per-group learning-rate scale comes from the task, so a checkpoint whose optimizer
    state does not carry it (written by an earlier version) still resumes."""
    out = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=2"), out, progress=False)
    path = out / "checkpoints" / "last.pt"
    state = checkpoint.load(path)
    for group in state["optimizer"]["param_groups"]:
        del group["lr_scale"]
    torch.save(state, path)
    train(tiny_config(tiny_npz, "train.steps=3"), out, progress=False)
    assert checkpoint.load(path)["step"] == 3


def test_resume_refuses_another_backbone(tiny_npz, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=1"), out, progress=False)
    other = tiny_config(
        tiny_npz,
        "train.steps=2",
        "backbone.name=resnet18",
        "backbone.width=0.25",
        "backbone.stem=small",
    )
    with pytest.raises(checkpoint.CheckpointError, match="backbone"):
        train(other, out, progress=False)


def test_corrupted_checkpoint_is_named(tiny_npz, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(b"garbage")
    with pytest.raises(checkpoint.CheckpointError, match=r"last\.pt"):
        train(tiny_config(tiny_npz, "train.steps=1"), out, progress=False)


def test_non_finite_loss_stops_with_step_and_task(tiny_npz, tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"counting.*step 0"):
        train(
            tiny_config(tiny_npz, "train.steps=2", "counting.margin=.inf"),
            tmp_path / "r",
            progress=False,
        )


def test_warmup_then_cosine_schedule():
    cfg = tiny_config(Path("x"), "optim.lr=1.0", "optim.warmup_steps=10").optim
    assert learning_rate(0, 100, cfg) == pytest.approx(0.1)
    assert learning_rate(9, 100, cfg) == pytest.approx(1.0)
    assert learning_rate(55, 100, cfg) == pytest.approx(0.5)
    assert learning_rate(100, 100, cfg) == pytest.approx(0.0)


def test_cli_errors_name_the_key_and_exit_2(tiny_npz, tmp_path, capsys):
    code = main(
        ["train", "counting", "--data", str(tiny_npz), "--out", str(tmp_path / "r"), "optim.lr=-1"]
    )
    assert code == 2 and "optim.lr" in capsys.readouterr().err
    code = main(
        [
            "train",
            "counting",
            "--data",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "1",
        ]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_killed_run_resumes_from_last_checkpoint(tiny_npz, tmp_path):
    """SIGKILL a real `selfsup train` process, rerun the command, and check it continues."""
    out = tmp_path / "run"

    def command(steps: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "selfsup",
            "train",
            "counting",
            "--data",
            str(tiny_npz),
            "--out",
            str(out),
            "--steps",
            str(steps),
            "--quiet",
            *TINY,
            "checkpoint.every=5",
        ]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command(400), env=env)
    path = out / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (path.exists() and checkpoint.load(path)["step"] >= 10):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = checkpoint.load(path)["step"]
    assert 10 <= killed_at < 400
    result = subprocess.run(
        command(killed_at + 5), env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert f"resumed from step {killed_at}" in result.stdout
    assert checkpoint.load(path)["step"] == killed_at + 5
