"""bench/harness, the library bench/perf.py and bench/gpu.py are profiles of: the size table,
the loop that runs sections into a results file, and the hardware section's fractions."""

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from harness.overhead import fractions  # noqa: E402
from harness.runner import PROFILE_NAMES, PROFILES, TABLE, Bench, run_sections  # noqa: E402


def bench(**options) -> Bench:
    return Bench(PROFILES["quick"], torch.device("cpu"), None, {}, Path("figures"), [], **options)


def work(value) -> float:
    """How much a size asks for: None means all of it; a tuple, its largest entry."""
    if value is None:
        return math.inf
    return max(value) if isinstance(value, tuple) else value


def test_every_profile_sets_every_size_and_quick_asks_least():
    """CI runs the quick profile on two cores: no size of it may ask for more than the others."""
    assert set(PROFILES) == set(PROFILE_NAMES) == {"quick", "cpu", "gpu"}
    for size, row in TABLE.items():
        assert len(row) == len(PROFILE_NAMES), size
        if size == "peer_heaps":  # names, not amounts
            continue
        quick = work(getattr(PROFILES["quick"], size))
        for name in ("cpu", "gpu"):
            assert quick <= work(getattr(PROFILES[name], size)), (size, name)


def test_sections_run_in_order_each_saved_a_failure_recorded_and_late_ones_skipped():
    saved = []
    ran = []

    def measured(b):
        ran.append("measured")
        return {"rate": 2.0}

    def broken(b):
        ran.append("broken")
        raise RuntimeError("out of memory")

    def slow(b):
        ran.append("slow")
        return {}

    sections = {"measured": measured, "broken": broken, "slow": slow}
    b = bench(deadline=100.0, results={"earlier": {"rate": 1.0}})
    failed = run_sections(b, sections, list(sections), saved.append, {"slow": 200}, {"mode": "q"})
    assert failed == ["broken"] and ran == ["measured", "broken"] and saved == list(sections)
    assert b.results["measured"]["rate"] == 2.0 and b.results["measured"]["mode"] == "q"
    assert b.results["measured"]["seconds"] >= 0
    assert b.results["broken"]["error"] == "RuntimeError: out of memory"
    assert "left before the deadline" in b.results["slow"]["skipped"]
    assert b.results["earlier"] == {"rate": 1.0}  # sections not run stay as they were


def test_hardware_fractions_are_of_the_overhead_and_peer_rates_in_the_results():
    results = {
        "overhead": {"tasks": {"counting": {"train_flops_per_image": 2e9,
                                            "full_images_per_sec": 100.0,
                                            "bare_images_per_sec": 200.0}}},
        "peer": {"train_flops_per_image": {"ours": 1e9, "peer": 1e9},
                 "ours_full_images_per_sec": 300.0, "ours_bare_images_per_sec": 400.0,
                 "peer_full_images_per_sec": 100.0, "peer_bare_images_per_sec": 500.0},
    }  # fmt: skip
    rows = fractions(bench(results=results), peak=1.0)  # 1 TFLOP/s
    assert rows["counting"] == pytest.approx(
        {"train_gflops_per_image": 2.0, "full_fraction_of_matmul": 0.2,
         "bare_fraction_of_matmul": 0.4}
    )  # fmt: skip
    assert rows["peer_section_ours"]["full_fraction_of_matmul"] == pytest.approx(0.3)
    assert rows["peer_section_peer"]["bare_fraction_of_matmul"] == pytest.approx(0.5)
    assert fractions(bench(), peak=1.0) == {}  # nothing measured yet: no fractions


def test_the_cpu_suites_are_rows_of_the_results_table_with_known_settings():
    """bench/suites.yaml is data bench/run.py trusts: every entry a row of
    bench/gpu_results.yaml (whose commands the CLI accepts: tests/test_bench_gpu.py) with only
    the settings an entry has, so a misspelt row or key fails here, not hours into a run."""
    import importlib

    run = importlib.import_module("run")
    from harness.rows import ROWS

    for suite, entries in run.SUITES.items():
        for name, settings in entries.items():
            entry = run.Entry(**settings)  # an unknown key is a TypeError
            assert entry.row in ROWS and entry.steps > 0, name
            assert entry.baselines in ("full", "random") or entry.baselines.startswith("shared:")
            # The transitive suite trains on the patch graph bench/run.py builds first.
            assert ROWS[entry.row].graph == (suite == "transitive"), name
