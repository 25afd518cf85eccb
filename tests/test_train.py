import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from selfsup import checkpoint
from selfsup.cli import main
from selfsup.train import (
    NonFiniteLossError,
    build_model,
    build_optimizer,
    learning_rate,
    peak_learning_rate,
    train,
)
from tests.helpers import SMALL_RESNET, TINY, tiny_config


def weights(path: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(path / "checkpoints" / "last.pt")["model"]


def test_run_folder_layout_and_metrics(tiny_npz, tmp_path, device):
    out = tmp_path / "run"
    cfg = tiny_config(tiny_npz, "train.steps=4", "checkpoint.every=2", f"train.device={device}")
    train(cfg, out, progress=False)
    assert (out / "config.yaml").is_file() and (out / "checkpoints" / "last.pt").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert {"loss", "lr", "images_per_sec", "equivariance", "contrast"} <= set(records[0])
    assert not list((out / "checkpoints").glob("*.tmp"))


def test_training_on_the_cpu_leaves_cudnn_settings_alone(tiny_npz, tmp_path):
    before = torch.backends.cudnn.benchmark
    cfg = tiny_config(tiny_npz, "train.steps=1", "train.device=cpu",
                      f"train.cudnn_benchmark={str(not before).lower()}")  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    assert torch.backends.cudnn.benchmark is before


def test_resume_continues_exactly(tiny_npz, tmp_path, device):
    """A run killed after step 4 (checkpoint at 3, metrics logged at 4) and rerun ends
    bitwise equal to an uninterrupted one, and logs each step once."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cfg = tiny_config(tiny_npz, "train.steps=6", "checkpoint.every=3", f"train.device={device}")
    train(cfg, straight, progress=False)
    crash_at_step(cfg, resumed, step=4)
    assert checkpoint.load(resumed / "checkpoints" / "last.pt")["step"] == 3
    train(cfg, resumed, progress=False)
    a, b = weights(straight), weights(resumed)
    logged = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").open()]
    assert logged == [2, 4, 6]  # the step-4 line of the crashed part is not duplicated
    assert a.keys() == b.keys()
    if device.type == "cpu":
        assert all(torch.equal(a[k], b[k]) for k in a)
    else:
        # cuDNN's backward kernels add with atomics in no fixed order, so two GPU runs of the
        # same steps differ in the last bits (on CPU they are bitwise equal).
        assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-3, atol=1e-5) for k in a)
    assert checkpoint.load(resumed / "checkpoints" / "last.pt")["step"] == 6


def crash_at_step(cfg, folder: Path, step: int) -> None:
    """Run training and crash as step `step` (0-based) starts, like a killed process."""
    import selfsup.train as loop

    original = loop.learning_rate

    def crash(current, total, optim, peak=None):
        if current == step:
            raise KeyboardInterrupt
        return original(current, total, optim, peak)

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


def test_non_finite_loss_stops_with_step_and_task(tiny_npz, tmp_path, device):
    with pytest.raises(NonFiniteLossError, match=r"counting.*step 0"):
        train(
            tiny_config(
                tiny_npz, "train.steps=2", "counting.margin=.inf", f"train.device={device}"
            ),
            tmp_path / "r",
            progress=False,
        )


def test_warmup_then_cosine_schedule():
    cfg = tiny_config(Path("x"), "optim.lr=1.0", "optim.warmup_steps=10").optim
    assert learning_rate(0, 100, cfg) == pytest.approx(0.1)
    assert learning_rate(9, 100, cfg) == pytest.approx(1.0)
    assert learning_rate(55, 100, cfg) == pytest.approx(0.5)
    assert learning_rate(100, 100, cfg) == pytest.approx(0.0)


def test_step_schedule_is_the_papers_formula_after_warm_up():
    """lr = peak * factor ** (step // every) once warm-up is over (the counting paper: 1e-4,
    "drop it by a factor of 0.9 every 10K iterations")."""
    overrides = ["optim.lr=0.0001", "optim.schedule=step", "optim.lr_step_factor=0.9"]
    cfg = tiny_config(Path("x"), *overrides, "optim.lr_step_every=10000", "optim.warmup_steps=0")
    cfg = cfg.optim
    for step in (0, 1, 9_999, 10_000, 19_999, 25_000, 349_999):
        expected = 1e-4 * 0.9 ** (step // 10_000)
        assert learning_rate(step, 350_000, cfg) == pytest.approx(expected, rel=1e-12), step
    warm = tiny_config(Path("x"), *overrides, "optim.lr_step_every=5", "optim.warmup_steps=4")
    rates = [learning_rate(step, 100, warm.optim) for step in range(12)]
    assert rates[:4] == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4])  # warm-up comes first
    assert rates[4:] == pytest.approx([1e-4] + [9e-5] * 5 + [8.1e-5] * 2)  # drops at 5, 10


def test_learning_rate_scales_with_the_global_batch():
    def optim(*overrides: str):
        return tiny_config(Path("x"), "optim.lr=0.3", *overrides).optim

    assert peak_learning_rate(optim(), 512) == pytest.approx(0.3)  # none: lr as given
    assert peak_learning_rate(optim("optim.lr_scaling=linear"), 512) == pytest.approx(0.6)
    assert peak_learning_rate(optim("optim.lr_scaling=sqrt"), 1024) == pytest.approx(0.6)
    linear = optim("optim.lr_scaling=linear", "optim.lr_reference_batch=128")
    assert peak_learning_rate(linear, 512) == pytest.approx(1.2)
    assert learning_rate(100, 100, linear, peak=1.2) == pytest.approx(0.0)
    assert learning_rate(99, 100, optim("optim.warmup_steps=100"), peak=1.2) == pytest.approx(1.2)


def test_scaled_learning_rate_is_what_the_run_uses(tiny_npz, tmp_path):
    cfg = tiny_config(
        tiny_npz, "train.steps=2", "train.log_every=1", "optim.lr=0.01",
        "optim.warmup_steps=0", "optim.schedule=constant", "optim.lr_scaling=linear",
        "optim.lr_reference_batch=4", "data.batch_size=8",
    )  # fmt: skip
    train(cfg, tmp_path / "r", progress=False)
    logged = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").open()]
    assert [r["lr"] for r in logged if "lr" in r] == [pytest.approx(0.02)] * 2


def test_weight_decay_exclusions_can_be_switched_off(tiny_npz):
    def decays(*overrides: str) -> set[tuple[int, float]]:
        cfg = tiny_config(tiny_npz, "optim.weight_decay=0.1", *overrides)
        optimizer = build_optimizer(build_model(cfg), cfg.optim)
        return {(p.ndim, g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}

    assert (1, 0.0) in decays() and (1, 0.1) not in decays()  # biases, norms: no decay
    assert {decay for _, decay in decays("optim.decay_norm_and_bias=true")} == {0.1}


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


def train_command(data: Path, out: Path, steps: int) -> list[str]:
    """`selfsup train` on the small ResNet, checkpointing every step (so kills often land
    inside a checkpoint write)."""
    return [
        *(sys.executable, "-m", "selfsup", "train", "counting", "--quiet"),
        *("--data", str(data), "--out", str(out), "--steps", str(steps)),
        *TINY,
        *SMALL_RESNET,
        "data.batch_size=8",
        "checkpoint.every=1",
    ]


def wait_for_logged_step(metrics: Path, step: int, process: subprocess.Popen) -> None:
    """Poll metrics.jsonl (cheap, unlike loading checkpoints) until `step` is logged."""
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if lines and lines[-1].endswith("}") and json.loads(lines[-1])["step"] >= step:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before step {step}: {process.poll()}")


def test_killed_run_resumes_bitwise_from_random_kill_points(tiny_npz, tmp_path):
    """SIGKILL real `selfsup train` processes at three seeded random points; each rerun of the
    same command resumes from the checkpoint the kill left, which always loads (never a
    half-written file), and the final weights, optimizer state and metrics equal those of an
    uninterrupted run bitwise (CPU kernels are deterministic)."""
    steps, rng = 48, random.Random(10)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    straight, out = tmp_path / "straight", tmp_path / "killed"
    reference = subprocess.Popen(
        train_command(tiny_npz, straight, steps), env=env, stdout=subprocess.DEVNULL
    )
    path = out / "checkpoints" / "last.pt"
    left_at = [0]  # the step of the checkpoint each kill left behind
    for _ in range(3):
        process = subprocess.Popen(
            train_command(tiny_npz, out, steps), env=env, stdout=subprocess.PIPE, text=True
        )
        # A few steps past the last checkpoint, so past any metrics the killed run logged
        # after it (they are dropped when the rerun resumes).
        target = left_at[-1] + rng.randrange(4, 11, 2)
        wait_for_logged_step(out / "metrics.jsonl", target, process)
        time.sleep(rng.uniform(0, 0.05))  # anywhere in a step, the checkpoint write included
        process.send_signal(signal.SIGKILL)
        stdout, _ = process.communicate()
        assert process.returncode == -signal.SIGKILL
        if left_at[-1]:
            assert f"resumed from step {left_at[-1]}" in stdout
        left_at.append(checkpoint.load(path)["step"])  # loads: the file is whole
    assert left_at == sorted(left_at) and left_at[-1] < steps
    final = subprocess.run(
        train_command(tiny_npz, out, steps), env=env, capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stderr
    assert f"resumed from step {left_at[-1]}" in final.stdout
    assert reference.wait(timeout=300) == 0
    a, b = (checkpoint.load(run / "checkpoints" / "last.pt") for run in (straight, out))
    assert a["step"] == b["step"] == steps
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    moments = [
        (a["optimizer"]["state"][i], b["optimizer"]["state"][i]) for i in a["optimizer"]["state"]
    ]
    assert all(torch.equal(x[key], y[key]) for x, y in moments for key in x)
    logged = [
        [json.loads(line)["step"] for line in (run / "metrics.jsonl").open()]
        for run in (straight, out)
    ]
    assert logged[0] == logged[1] == list(range(2, steps + 1, 2))
    assert not list(path.parent.glob("*.tmp"))
