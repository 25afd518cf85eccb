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
from selfsup.config import parse_overrides, resolve
from selfsup.tasks import task_config_class
from selfsup.train import NonFiniteLossError, learning_rate, train

TINY = [
    "backbone.name=alexnet_small",
    "counting.num_counts=32",
    "counting.head_hidden=[32]",
    "counting.crop_size=16",
    "data.batch_size=16",
    "data.workers=0",
    "train.log_every=2",
    "optim.warmup_steps=2",
]


def tiny_config(data: Path, *extra: str):
    values = parse_overrides([*TINY, f"data.path={data}", *extra])
    return resolve(values, task_config_class)


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
    """A run interrupted after its step-3 checkpoint and rerun ends bitwise equal."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cfg = tiny_config(tiny_npz, "train.steps=6", "checkpoint.every=3")
    train(cfg, straight, progress=False)
    stop_after_checkpoint(cfg, resumed, at_step=3)
    assert checkpoint.load(resumed / "checkpoints" / "last.pt")["step"] == 3
    train(cfg, resumed, progress=False)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint.load(resumed / "checkpoints" / "last.pt")["step"] == 6


def stop_after_checkpoint(cfg, folder: Path, at_step: int) -> None:
    """Run training but crash right after the checkpoint at `at_step` is written."""
    import selfsup.train as loop

    original = loop.save

    def save_then_crash(run, step):
        original(run, step)
        if step == at_step:
            raise KeyboardInterrupt

    loop.save = save_then_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, folder, progress=False)
    finally:
        loop.save = original


def test_rerun_with_more_steps_trains_on(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=2"), out, progress=False)
    train(tiny_config(tiny_npz, "train.steps=4"), out, progress=False)
    assert "resumed from step 2" in capsys.readouterr().out
    assert checkpoint.load(out / "checkpoints" / "last.pt")["step"] == 4


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
