"""Faults while a run writes its folder: disk full or an unwritable checkpoint folder, a torn
metrics line, a non-finite loss. Each stops with one line naming the path or the step, and the
last good checkpoint stays usable. (Kill -9 at random points: tests/test_train.py; a crashed
or stuck DDP rank: tests/test_ddp.py.)"""

from __future__ import annotations

import errno
import io
import json
import tempfile
from pathlib import Path

import torch

from selfsup import checkpoint
from tests.helpers import one_torch_thread  # noqa: F401 (autouse)
from tests.test_bad_input import FAST, train_cli


class FullDisk(io.RawIOBase):
    """A file that takes `room` bytes, then fails like a full disk (ENOSPC)."""

    def __init__(self, file, room: int):
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.room:
            self.file.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)


def last_checkpoint(out: Path) -> Path:
    return out / "checkpoints" / "last.pt"


def assert_previous_checkpoint_intact(out: Path, before: bytes, step: int) -> None:
    path = last_checkpoint(out)
    assert path.read_bytes() == before and checkpoint.load(path)["step"] == step
    assert not list(path.parent.glob("*.tmp"))  # the half-written temporary is gone


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(
    tiny_npz, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "run"
    assert train_cli(tiny_npz, out, *FAST, "train.steps=2") == 0
    before = last_checkpoint(out).read_bytes()
    real_save = torch.save
    # The disk fills after 1000 bytes of the next checkpoint; torch.save reports that as a
    # RuntimeError whose context is the OSError, as it does for a real full disk.
    monkeypatch.setattr(torch, "save", lambda obj, file: real_save(obj, FullDisk(file, 1000)))
    code = train_cli(tiny_npz, out, *FAST, "train.steps=4", "checkpoint.every=1")
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"could not write checkpoint {last_checkpoint(out)}" in err
    assert "No space left on device" in err and "previous checkpoint (if any) is intact" in err
    assert_previous_checkpoint_intact(out, before, step=2)
    monkeypatch.undo()  # space freed: the same command resumes from step 2
    assert train_cli(tiny_npz, out, *FAST, "train.steps=4", "checkpoint.every=1") == 0
    assert "resumed from step 2" in capsys.readouterr().out
    assert checkpoint.load(last_checkpoint(out))["step"] == 4


def test_unwritable_checkpoint_folder_is_named(tiny_npz, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert train_cli(tiny_npz, out, *FAST, "train.steps=2") == 0
    before = last_checkpoint(out).read_bytes()

    def refuse(*args, dir=None, **kwargs):  # what a read-only folder does (even for root)
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code = train_cli(tiny_npz, out, *FAST, "train.steps=3")
    err = capsys.readouterr().err
    assert code == 2 and f"could not write checkpoint {last_checkpoint(out)}" in err, err
    assert "Permission denied" in err
    assert_previous_checkpoint_intact(out, before, step=2)


def test_unwritable_output_folder_is_named(tiny_npz, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the run folder's parent should be")
    code = train_cli(tiny_npz, blocker / "run", *FAST)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("selfsup: error: ") and str(blocker / "run") in err, err


def test_stale_temporaries_of_a_killed_save_are_removed(tiny_npz, tmp_path):
    out = tmp_path / "run"
    stale = out / "checkpoints" / ".last.pt.abc123.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half of a checkpoint")
    assert train_cli(tiny_npz, out, *FAST) == 0
    assert not stale.exists() and checkpoint.load(last_checkpoint(out))["step"] == 1


def test_torn_metrics_line_is_dropped_on_resume(tiny_npz, tmp_path):
    out = tmp_path / "run"
    assert train_cli(tiny_npz, out, *FAST, "train.steps=2") == 0
    with (out / "metrics.jsonl").open("a") as log:
        log.write('{"step": 3, "loss": 0.')  # killed, or the disk filled, mid-line
    assert train_cli(tiny_npz, out, *FAST, "train.steps=4") == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").open()]
    assert steps == [2, 4]


def test_run_killed_before_its_first_checkpoint_restarts_with_clean_metrics(tiny_npz, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')  # no checkpoint followed
    assert train_cli(tiny_npz, out, *FAST, "train.steps=2") == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [2] and rows[0]["loss"] != 9.0


def test_non_finite_loss_names_step_task_and_last_checkpoint(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_cli(tiny_npz, out, *FAST, "train.steps=2") == 0
    # An infinite margin, asked for on resuming, makes the loss infinite from the next step on.
    code = train_cli(
        tiny_npz, out, *FAST, "train.steps=4", "counting.margin=.inf", "--change", "counting.margin"
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert "task counting: loss is inf at step 2" in err
    assert f"last finite checkpoint: {last_checkpoint(out)}" in err
    assert checkpoint.load(last_checkpoint(out))["step"] == 2
