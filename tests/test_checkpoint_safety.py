"""Opening a checkpoint never runs code from it."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from selfsup import checkpoint
from selfsup.train import train
from tests.helpers import tiny_config


class WritesAMarker:
    """Unpickling this calls open(marker, "w"): any code could run the same way."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, writer):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    state = {"model": {}, "payload": WritesAMarker(str(marker))}
    if writer == "torch.save":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes the unusual pickle protocol
        with pytest.raises(checkpoint.CheckpointError, match=r"evil\.pt.*refused"):
            checkpoint.load(path)
    assert not marker.exists()
    # The payload is real: a plain unpickler would have run it.
    if writer == "torch.save":
        unpickled = torch.load(path, weights_only=False)
    else:
        unpickled = pickle.loads(path.read_bytes())
    unpickled["payload"].close()
    assert marker.exists()


def test_training_checkpoints_hold_only_plain_data(tiny_npz, tmp_path):
    train(tiny_config(tiny_npz, "train.steps=1"), tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "config", "rng", "step"} <= set(state)


def test_saving_something_that_would_not_load_safely_fails_early(tmp_path):
    with pytest.raises(TypeError, match=r"state\['rng'\]\['numpy'\].*ndarray"):
        checkpoint.save_atomic({"model": {}, "rng": {"numpy": np.zeros(3)}}, tmp_path / "last.pt")
    assert not (tmp_path / "last.pt").exists()
