"""bench/gpu.py and bench/gpu_results.py, the scripts the GPU figures come from, run with
--quick on the CPU: every section of bench/gpu.py but the demo runs (the peer only where
LightlySSL is installed) and writes its figures; the results runner appends and skips rows,
its rows and claims read from bench/gpu_results.yaml."""

import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_images

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
    assert "demo" not in figures  # minutes of probes on a CPU: tests/test_demo.py runs it
    decode = figures["decode"]
    assert decode["pil_workers_images_per_sec"] > 0 and decode["device_decode_images_per_sec"] > 0
    assert figures["compile"]["modes"]["off"]["images_per_sec"] > 0
    tests = figures["cuda_tests"]  # on a CPU the CUDA variants skip; the plumbing runs
    assert tests["exit_code"] == 0 and tests["failed"] == {} and tests["skipped"] > 0
    assert "skipped" in figures["peer"] or figures["peer"]["peer_full_images_per_sec"] > 0
    assert (tmp_path / "out" / "gpu_results.tar.gz").is_file()


def test_a_rerun_of_some_sections_keeps_the_others(tmp_path):
    """A call that ran out of time is completed by a second with --only: the sections of
    the first stay in the file (the file is also rewritten after every section)."""
    results = tmp_path / "gpu.json"
    earlier = {"device": "cpu", "tasks": {"tasks": {"counting": {"full_images_per_sec": 1.0}}}}
    results.write_text(json.dumps(earlier))
    argv = [sys.executable, "bench/gpu.py", "--quick", "--device", "cpu", "--only", "decode"]
    argv += ["--results", str(results), "--out", str(tmp_path / "out")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(results.read_text())
    assert figures["tasks"] == earlier["tasks"] and figures["decode"]["pil_workers_images_per_sec"]
    assert json.loads((tmp_path / "out" / "gpu.json").read_text()) == figures
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "gpu.json",
        "gpu_results.tar.gz",
    ]


def bench_module(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    return importlib.import_module(name)


def test_cuda_tests_stopped_at_their_limit_still_count_what_finished():
    gpu = bench_module("harness.gpu_sections")
    output = (
        b"tests/test_gpu.py::test_views_on_cuda_match_the_cpu[counting] PASSED   [  3%]\n"
        b"tests/test_gpu.py::test_views_on_cuda_match_the_cpu[rotation] FAILED   [  6%]\n"
        b"tests/test_train.py::test_resume_continues_exactly[cpu] SKIPPED (no)  [  9%]\n"
        b"tests/test_train.py::test_resume_continues_exactly[cuda] PASSED        [ 12%]\n"
        b"tests/test_train.py::test_run_folder_layout_and_metrics[cuda] "
    )  # stopped while the last test ran
    counts = gpu.pytest_verdicts(output)
    assert counts["passed"] == 2 and counts["skipped"] == 1
    assert counts["failed"] == {
        "tests/test_gpu.py::test_views_on_cuda_match_the_cpu[rotation]": "FAILED"
    }


def test_demo_phases_are_timed_from_the_header_lines(monkeypatch):
    gpu = bench_module("harness.gpu_sections")
    now = iter([10.0, 13.5, 40.0])
    monkeypatch.setattr(gpu.time, "perf_counter", lambda: next(now))
    clock = gpu.PhaseClock()  # started at 10.0
    clock.see("[1/2] pretraining counting ...\ntrain counting: 100%")
    clock.see("[2/2] linear probes on frozen features")
    assert clock.marks == {"1": 3.5, "2": 30.0}


@pytest.mark.slow
def test_results_runner_appends_rows_and_skips_measured_ones(tmp_path):
    """Two rows at tiny scale (a method and the random init of its architecture), run at once,
    then a rerun that finds both measured and trains nothing."""
    results = tmp_path / "rows.json"
    argv = [sys.executable, "bench/gpu_results.py", "--quick", "counting", "random-alexnet_small"]
    argv += ["--results", str(results)]
    first = subprocess.run([*argv, "--parallel", "2"], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    rows = json.loads(results.read_text())["rows"]
    assert set(rows) == {"counting", "random-alexnet_small"}
    counting = rows["counting"]
    assert counting["steps"] == 2 and counting["train_seconds"] > 0
    assert 0 <= counting["knn_top1"] <= 100 and counting["num_test"] == 128
    assert set(counting["linear_top1"]) == {"conv1", "conv2", "conv3", "conv4", "conv5"}
    assert rows["random-alexnet_small"]["steps"] == 0
    assert counting["concurrent"] == 2
    assert "| counting (AlexNet, small) | cifar10 |" in first.stdout
    assert "(2 at once)" in first.stdout
    again = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "counting: measured" in again.stdout
    assert json.loads(results.read_text())["rows"] == rows


def test_a_failing_row_leaves_the_others_measured_and_the_deadline_holds_rows_back(
    tmp_path, monkeypatch
):
    module = bench_module("gpu_results")
    args = module.parse_args(["--results", str(tmp_path / "rows.json"), "--parallel", "2"])

    def run_row(name, root, args):
        if name == "counting":
            raise RuntimeError("selfsup train counting failed: CUDA out of memory")
        return {"knn_top1": 50.0, "linear_top1": {"conv1": 40.0}}

    monkeypatch.setattr(module, "run_row", run_row)
    results = {"rows": {}}
    failed = module.run_rows(["counting", "rotation", "jigsaw"], tmp_path, args, results)
    assert failed == ["counting"]
    saved = json.loads(args.results.read_text())["rows"]
    assert set(saved) == set(results["rows"]) == {"rotation", "jigsaw"}
    # Six minutes of training cannot end within 60 s: budgeted rows are not started, a
    # random-init row (evaluation only) is.
    args.deadline = 60
    results = {"rows": {}}
    failed = module.run_rows(["colorization", "random-alexnet_small"], tmp_path, args, results)
    assert failed == [] and set(results["rows"]) == {"random-alexnet_small"}


def test_the_transitive_rows_wait_for_the_run_that_embeds_their_graph(tmp_path, monkeypatch):
    module = bench_module("gpu_results")
    args = module.parse_args(["--results", str(tmp_path / "rows.json"), "--parallel", "3"])
    ended = []

    def run_row(name, root, args):
        if name == "relative-position":
            time.sleep(0.5)
        elif module.ROWS[name].graph:
            assert "relative-position" in ended, f"{name} started before its embedder ended"
        ended.append(name)
        return {"knn_top1": 50.0, "linear_top1": {"conv1": 40.0}}

    monkeypatch.setattr(module, "run_row", run_row)
    names = ["relative-position", "transitive-inter", "transitive-intra"]
    assert module.run_rows(names, tmp_path, args, {"rows": {}}) == []
    assert ended[0] == "relative-position" and len(ended) == 3


def test_a_kept_graph_spares_the_transitive_rows_their_embedder_run(tmp_path, monkeypatch):
    """A run on a bare machine given the graph an earlier run kept (--keep-graph, then
    --prepare --graph) merges the patches again and trains nothing before the rows."""
    module = bench_module("gpu_results")
    rows = bench_module("harness.rows")
    monkeypatch.setattr(module, "RUNS", tmp_path / "runs")
    merged = []
    monkeypatch.setattr(rows, "merge_patches", lambda videos, images, out, size: merged.append(out))

    def ran(*argv, **options):
        raise AssertionError(f"ran {' '.join(map(str, argv[:2]))} with a graph at hand")

    monkeypatch.setattr(module, "selfsup", ran)
    monkeypatch.setattr(rows, "run", ran)
    root = tmp_path / "inputs"
    (root / "transitive" / "davis").mkdir(parents=True)
    (root / "transitive" / "davis" / "patches.npz").write_bytes(b"patches")
    (root / "transitive" / "graph.npz").write_bytes(b"kept graph")
    args = module.parse_args([])
    patches, graph = module.transitive_graph(root, args)
    assert merged == [patches] and graph.read_bytes() == b"kept graph"
    # The patch set mined with the earlier masks is its own graph, kept under its own name.
    assert module.graph_set(module.ROWS["transitive-residual-masks"].masks) == (
        "transitive-residual"
    )


def test_the_runner_runs_selfsup_from_the_checkout_where_nothing_is_installed(monkeypatch):
    """The GPU machine gets a checkout and a Python with PyTorch and NumPy: no selfsup
    installed. The base interpreter of this environment stands in for it (`--version` needs
    no torch, but the command line imports NumPy)."""
    module = bench_module("gpu_results")
    bare = Path(sys.base_prefix) / "bin" / "python3"
    check = subprocess.run([bare, "-c", "import selfsup"], capture_output=True, cwd="/")
    if check.returncode == 0:
        pytest.skip("selfsup is importable from the base interpreter too")
    if subprocess.run([bare, "-c", "import numpy"], capture_output=True).returncode != 0:
        pytest.skip("the base interpreter has no NumPy, which the GPU machine's Python has")
    monkeypatch.setattr(module.sys, "executable", str(bare))
    assert module.selfsup("--version") > 0


def test_claims_read_the_table_as_the_papers_state_them():
    module = bench_module("gpu_results")

    def row(*linear):
        return {"linear_top1": {f"conv{i + 1}": v for i, v in enumerate(linear)}}

    rows = {"counting": row(40, 50, 55), "random-alexnet_small": row(39, 51, 50)}
    verdicts = dict(module.claims(rows))
    assert verdicts["counting above random init on every layer (linear probes)"] == (
        "not confirmed: at or below on conv2"
    )
    rows["random-alexnet_small"] = row(30, 40, 50)
    singles = ["relative-position", "colorization", "exemplar", "motion-segmentation"]
    rows.update({name: row(50 + i) for i, name in enumerate(singles)})
    rows["four-lasso"] = row(55)
    verdicts = dict(module.claims(rows))
    assert verdicts["counting above random init on every layer (linear probes)"] == "confirmed"
    four = verdicts["the four-task trunk above every single task (best linear layer)"]
    assert four == "confirmed: +2.00 points against motion-segmentation"
    transitive = "transitive above inter-only and intra-only (best linear layer)"
    assert verdicts[transitive] == "not yet measured"
    names = ["transitive-transitive", "transitive-inter", "transitive-intra"]
    rows.update({name: row(45 - i, 40) for i, name in enumerate(names)})
    assert dict(module.claims(rows))[transitive] == (
        "confirmed: +1.00 points against transitive-inter"
    )


def test_transitive_rows_train_on_the_patch_graph_and_evaluate_on_images(tmp_path):
    module = bench_module("gpu_results")
    paths = {name: tmp_path / f"{name}.npz" for name in ("train", "test", "patches", "graph")}
    for edges in ("inter", "intra", "transitive"):
        row = module.ROWS[f"transitive-{edges}"]
        argv = module.train_argv(row, paths, tmp_path / "run", 5)
        assert row.graph and f"transitive.edges={edges}" in argv
        assert argv[argv.index("--data") + 1] == str(paths["patches"])
        assert argv[argv.index("--graph") + 1] == str(paths["graph"])
    # Every other row trains on the images it is evaluated on.
    argv = module.train_argv(module.ROWS["rotation"], paths, tmp_path / "run", 5)
    assert argv[argv.index("--data") + 1] == str(paths["train"]) and "--graph" not in argv
    # The recipe ablations each undo one setting of the whole recipe.
    recipe = module.ROWS["simclr-100"].train
    for name, row in module.ROWS.items():
        if name.startswith("simclr-100-"):
            assert row.train[: len(recipe)] == recipe and len(row.train) == len(recipe) + 1


def test_the_rows_file_names_real_rows_and_settings_the_cli_accepts(tmp_path):
    """bench/gpu_results.yaml is data the runner trusts: every `@group` spelled out, every
    `random_of` and claimed row a row of the table, every row's command a config the CLI
    resolves (an unknown key, a misspelt task or preset fails here, not on the GPU)."""
    module = bench_module("gpu_results")
    from harness.stepper import loop_config

    paths = {name: tmp_path / name for name in ("patches", "graph", "videos")}
    images, labels = make_images(8)  # labelled: the supervised rows read their classes there
    for split in ("train", "test"):
        paths[split] = tmp_path / f"{split}.npz"
        np.savez(paths[split], images=images, labels=labels)
    for name, row in module.ROWS.items():
        assert not any(arg.startswith("@") for arg in row.train), name
        if row.random_of:
            assert module.ROWS[row.random_of].train and not row.train, name
            continue
        loop_config(module.train_argv(row, paths, tmp_path / name, 5))
    for claim in module.CLAIMS:
        assert {claim["row"], *claim["against"]} <= set(module.ROWS), claim["claim"]
        assert claim["compare"] in ("every_layer", "best_layer"), claim["claim"]
