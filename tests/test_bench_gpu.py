"""bench/gpu.py, the script the GPU figures come from, run with --quick on the CPU: every
section runs (the peer only where LightlySSL is installed) and writes its figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_runs_quick_on_the_cpu(tmp_path):
    results = tmp_path / "gpu.json"
    argv = [sys.executable, "bench/gpu.py", "--quick", "--device", "cpu"]
    argv += ["--results", str(results), "--out", str(tmp_path / "out")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(results.read_text())
    failed = {
        name: row["error"]
        for name, row in figures.items()
        if isinstance(row, dict) and "error" in row
    }
    assert not failed, failed
    for task in ("counting", "exemplar-infonce-resnet18"):
        row = figures["tasks"]["tasks"][task]
        assert row["full_images_per_sec"] > 0 and row["bare_images_per_sec"] > 0
        assert row["train_flops_per_image"] > 0 and "overhead_pct" in row
    assert figures["counting_paper"]["batch"] == 2
    assert figures["demo"]["probe_seconds"] > 0 and figures["demo"]["pretrain_seconds"] > 0
    decode = figures["decode"]
    assert decode["pil_workers_images_per_sec"] > 0 and decode["device_decode_images_per_sec"] > 0
    assert figures["compile"]["modes"]["off"]["images_per_sec"] > 0
    assert "skipped" in figures["peer"] or figures["peer"]["peer_full_pairs_per_sec"] > 0
    assert (tmp_path / "out" / "gpu_results.tar.gz").is_file()
