"""One run folder, one writer. A second `train` into a folder that another process is
training is refused in one line (two writers would interleave one checkpoint and one metrics
file); a shared cache entry waits instead; a killed run's claim dies with it."""

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from selfsup.checkpoint import CheckpointError
from selfsup.cli import main
from selfsup.outputs import FolderBusy, hold_folder
from selfsup.train import train
from tests.helpers import TINY, tiny_config

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="no flock on Windows")

HOLDER = """
import sys, time
from pathlib import Path
from selfsup.outputs import hold_folder
claim = hold_folder(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(120)
"""


def start_holder(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`, as a training into it would."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], env=env, stdout=subprocess.PIPE
    )
    assert holder.stdout.readline().strip() == b"held"
    return holder


def test_a_second_train_into_a_busy_run_folder_is_refused_in_one_line(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    holder = start_holder(run)
    try:
        argv = ["train", "counting", "--data", str(tiny_npz), "--out", str(run), "--quiet"]
        assert main([*argv, *TINY, "train.steps=2"]) == 2
        error = capsys.readouterr().err.strip()
        assert error.count("\n") == 0 and error.startswith("selfsup: error: ")
        assert f"{run}: another selfsup process (pid {holder.pid})" in error
        assert not (run / "checkpoints").exists()  # nothing written beside the holder's
    finally:
        holder.kill()
        holder.wait()
    # Killed, the holder's claim is gone with it: the same command now trains.
    assert main([*argv, *TINY, "train.steps=2"]) == 0
    assert (run / "checkpoints" / "last.pt").is_file()


def test_a_claim_is_released_when_training_ends_or_fails(tiny_npz, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=2"), run, progress=False)
    hold_folder(run).close()  # free again: the finished run let go
    other_model = tiny_config(tiny_npz, "train.steps=4", "backbone.name=resnet18")
    with pytest.raises(CheckpointError, match="backbone"):  # refused after claiming the folder
        train(other_model, run, progress=False)
    hold_folder(run).close()


def test_a_shared_cache_entry_waits_for_the_job_training_it(tiny_npz, tmp_path):
    """As two evaluations needing the same supervised baseline do: the second waits for the
    first, then finds the run trained and trains nothing."""
    run = tmp_path / "cache" / "runs" / "supervised-x"
    first_job = hold_folder(run)
    with pytest.raises(FolderBusy):
        hold_folder(run).close()
    found = []

    def second_job() -> None:
        done = train(tiny_config(tiny_npz, "train.steps=2"), run, False, wait_for_folder=True)
        found.append(done.start_step)

    second = threading.Thread(target=second_job)
    second.start()
    # Meanwhile the first job trains the entry (here: elsewhere, its files then moved in).
    train(tiny_config(tiny_npz, "train.steps=2"), tmp_path / "elsewhere", progress=False)
    assert second.is_alive()  # waiting, not refused
    for name in ("checkpoints", "config.yaml", "metrics.jsonl"):
        shutil.move(tmp_path / "elsewhere" / name, run / name)
    first_job.close()
    second.join(timeout=120)
    assert found == [2]  # resumed at the end: nothing trained twice


def test_a_file_system_without_locks_trains_unclaimed_and_says_so(tmp_path, monkeypatch, capsys):
    import fcntl

    def no_locks(handle, operation):
        raise OSError(37, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert hold_folder(tmp_path / "run") is None
    assert "cannot be locked (No locks available)" in capsys.readouterr().err
