"""`train.precision=auto` on a CPU: measured, cached, recorded, and without a trace."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from selfsup import checkpoint, precision
from selfsup.runtime import resolve_precision
from selfsup.train import train
from tests.helpers import tiny_config


def sleeper(seconds: dict[str, float], calls: list):
    """A step that costs `seconds[dtype name]`, recording each call's dtype."""

    def step(dtype):
        name = "bf16" if dtype == torch.bfloat16 else "fp32"
        calls.append(name)
        time.sleep(seconds[name])

    return step


@pytest.mark.parametrize("faster", ["bf16", "fp32"])
def test_auto_takes_the_faster_dtype_and_caches_it(tmp_path, faster):
    slower = "fp32" if faster == "bf16" else "bf16"
    calls: list = []
    step = sleeper({faster: 0.01, slower: 0.03}, calls)
    choice = precision.measure(step, items=8, workload="w", cache_dir=tmp_path, budget_s=0.3)
    assert choice.choice == faster and choice.source == "measured"
    assert choice.rates[faster] > 2 * choice.rates[slower]  # 800 items/s against 267
    # Warm-up of each, then rounds that alternate: a busier machine slows both alike.
    assert calls[:4] == ["bf16", "fp32", "bf16", "fp32"]
    assert calls.count("bf16") == calls.count("fp32") >= 2

    def must_not_run(dtype):
        raise AssertionError("measured again")

    again = precision.measure(must_not_run, items=8, workload="w", cache_dir=tmp_path)
    assert (again.choice, again.rates, again.source) == (faster, choice.rates, "cached")
    # Another workload (another model or batch) is measured anew.
    calls.clear()
    precision.measure(step, items=8, workload="other", cache_dir=tmp_path, budget_s=0.1)
    assert calls


# A process that waits for `go`, then measures a step on which `faster` is faster; prints
# its choice and whether it measured or read the cache.
MEASURE_AFTER_GO = """
import sys, time
from pathlib import Path
from selfsup import precision
go, cache, faster = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
while not go.exists():
    time.sleep(0.005)
def step(dtype):
    name = "bf16" if dtype is not None else "fp32"
    time.sleep(0.01 if name == faster else 0.03)
choice = precision.measure(step, items=8, workload="w", cache_dir=cache, budget_s=0.5)
print(choice.choice, choice.source)
"""


def test_runs_started_together_make_one_choice(tmp_path):
    """Two processes measure one workload at the same moment, each on a machine that would
    favour another dtype: one measures, the other waits and takes its choice from the cache
    (without the lock both would miss the cache and disagree)."""
    go = tmp_path / "go"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", MEASURE_AFTER_GO, str(go), str(tmp_path / "cache"), faster],
            stdout=subprocess.PIPE,
            text=True,
        )
        for faster in ("bf16", "fp32")
    ]
    time.sleep(2)  # both started and waiting (imports done)
    go.touch()
    said = sorted(run.communicate(timeout=120)[0].split() for run in runs)
    assert all(run.returncode == 0 for run in runs)
    assert said[0][0] == said[1][0]  # one choice
    assert [source for _, source in said] == ["cached", "measured"]


def test_a_step_slower_than_the_budget_is_timed_once_per_dtype(tmp_path):
    calls: list = []
    # Far apart: each dtype is timed once, so a scheduling delay on a loaded machine must not
    # be able to turn the order round.
    step = sleeper({"bf16": 0.02, "fp32": 0.25}, calls)
    choice = precision.measure(step, items=1, workload="w", cache_dir=tmp_path, budget_s=0.01)
    assert calls == ["bf16", "fp32"] and choice.choice == "bf16"


def test_trial_steps_leave_no_trace():
    """Batch-norm statistics, gradients and the global random state (dropout) are as before
    the trial steps: the run then trains as one told its precision would."""
    torch.manual_seed(0)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))

        def forward(self, views):
            return {"loss": self.body(views["x"]).square().mean()}

        def backward_metrics(self):
            return {}

    model = Tiny().train()
    views = {"x": torch.randn(4, 3, 8, 8)}
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rng = torch.get_rng_state()
    step = precision.training_step(model, views, torch.device("cpu"))
    with precision.untouched(model):
        step(None)
        step(torch.bfloat16)
        assert not torch.equal(model.body[1].running_mean, buffers["body.1.running_mean"])
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_cpu_run_measures_records_and_resumes_with_its_choice(
    tiny_npz, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "auto"
    cfg = tiny_config(tiny_npz, "train.steps=4", "checkpoint.every=2", "train.device=cpu")
    assert cfg.train.precision == "auto"
    train(cfg, out, progress=False)
    record = json.loads((out / "precision.json").read_text())
    assert record["choice"] in ("bf16", "fp32") and set(record["rates"]) == {"bf16", "fp32"}
    assert record["choice"] == max(record["rates"], key=record["rates"].get)
    # The measurement changed nothing: the same run told that dtype ends bitwise equal.
    told = tmp_path / "told"
    train(tiny_config(tiny_npz, "train.steps=4", "train.device=cpu",
                      f"train.precision={record['choice']}"), told, progress=False)  # fmt: skip
    a = checkpoint.load(out / "checkpoints" / "last.pt")["model"]
    b = checkpoint.load(told / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (told / "precision.json").exists()  # nothing measured when told
    # A resumed run keeps its dtype, even where a new measurement would say otherwise.
    flipped = {**record, "choice": "fp32" if record["choice"] == "bf16" else "bf16"}
    (out / "precision.json").write_text(json.dumps(flipped))
    capsys.readouterr()
    resumed = train(tiny_config(tiny_npz, "train.steps=6", "train.device=cpu"), out)
    assert resumed.start_step == 4
    assert json.loads((out / "precision.json").read_text())["choice"] == flipped["choice"]
    printed = capsys.readouterr()
    assert f"precision auto -> {flipped['choice']} (" in printed.out + printed.err


def test_auto_outside_training_is_exact_on_a_cpu():
    assert resolve_precision("auto", torch.device("cpu")) is None
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
