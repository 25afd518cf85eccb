"""`video masks|patches --ray` on a local Ray cluster of 2 CPUs: the same outputs as one
process, and nothing lost or doubled when a worker or the driver is killed mid-run.

Skipped where `ray` is not installed (it is an optional extra: pip install 'selfsup[ray]').
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from selfsup.cli import main
from tests.conftest import ROOT, real_data_dir

ray = pytest.importorskip("ray", reason="ray is an optional extra: pip install 'selfsup[ray]'")
psutil = pytest.importorskip("psutil", reason="ray[default] brings psutil")

DATA = real_data_dir() / "video"  # $SELFSUP_DATA, else the shared data beside the repo
DAVIS = DATA / "davis2016" / "JPEGImages" / "480p"
VTEST = DATA / "opencv_vtest" / "vtest_first200_384x288.npz"
FAST = ["--size", "96", "--quiet", "masks.flow_size=96"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.realdata,
    pytest.mark.skipif(
        not DAVIS.is_dir() or not VTEST.is_file(), reason=f"no shared data at {DATA}"
    ),
]


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for the module; its GCS address for other drivers."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def arrays(file: Path) -> dict[str, np.ndarray]:
    with np.load(file) as data:
        return {k: data[k] for k in data.files}


def assert_same(a: Path, b: Path) -> None:
    one, other = arrays(a), arrays(b)
    assert one.keys() == other.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], other[key], err_msg=key)


def test_ray_mines_the_same_patches_and_masks_as_one_process(cluster, tmp_path):
    videos = [str(DAVIS / "car-shadow"), str(VTEST)]
    for command, extra, combined in (
        # Patches in chunks of 6 frames (two tasks per video), masks per video.
        ("patches", ["--max-frames", "10", "--chunk-frames", "6", *FAST], "patches.npz"),
        (
            "masks",
            ["--max-frames", "6", "--size", "96", "--quiet", "flow_size=96"],
            "motion_masks.npz",
        ),
    ):
        one, spread = tmp_path / f"{command}-one", tmp_path / f"{command}-ray"
        assert main(["video", command, *videos, "--out", str(one), *extra]) == 0
        assert main(["video", command, *videos, "--out", str(spread), "--ray", *extra]) == 0
        assert_same(one / combined, spread / combined)
    assert len(arrays(one / "motion_masks.npz")["images"]) == 12
    assert len(list((tmp_path / "patches-ray" / "videos").glob("*@*.npz"))) == 4


def selfsup_tasks() -> list[psutil.Process]:
    """Ray worker processes running a video now (their title is ray::<task name>)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any("selfsup-video" in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def test_killing_a_worker_mid_run_loses_and_doubles_nothing(cluster, tmp_path):
    videos = [str(DAVIS / name) for name in ("car-shadow", "blackswan", "goat")]
    argv = ["video", "patches", *videos, "--max-frames", "24", *FAST]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    codes: list[int] = []
    run = threading.Thread(
        target=lambda: codes.append(main([*argv, "--out", str(tmp_path / "ray"), "--ray"]))
    )
    run.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and run.is_alive() and time.monotonic() < deadline:
        if tasks := selfsup_tasks():
            killed = tasks[0].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    run.join()
    assert killed is not None, "no worker was seen running a video"
    assert codes == [0]
    assert sorted(p.name for p in (tmp_path / "ray" / "videos").glob("[!.]*")) == [
        "blackswan.npz",
        "car-shadow.npz",
        "goat.npz",
    ]
    assert_same(tmp_path / "one" / "patches.npz", tmp_path / "ray" / "patches.npz")


def test_killing_the_driver_and_rerunning_finishes_the_rest(cluster, tmp_path):
    videos = [str(DAVIS / name) for name in ("car-shadow", "blackswan", "goat")]
    argv = ["video", "patches", *videos, "--max-frames", "8", *FAST]
    out = tmp_path / "ray"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    driver = subprocess.Popen(
        [sys.executable, "-m", "selfsup", *argv, "--out", str(out), "--ray", cluster], env=env
    )
    deadline = time.monotonic() + 300  # a loaded machine starts Ray's workers slowly
    while not list((out / "videos").glob("[!.]*.npz")) and time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before any video was done"
        time.sleep(0.2)
    driver.kill()
    driver.wait()
    done = sorted(p.name for p in (out / "videos").glob("[!.]*.npz"))
    assert 0 < len(done) < 3 and not (out / "patches.npz").exists()
    assert main([*argv, "--out", str(out), "--ray"]) == 0  # the rerun finishes the rest
    assert sorted(p.name for p in (out / "videos").glob("[!.]*.npz")) == [
        "blackswan.npz",
        "car-shadow.npz",
        "goat.npz",
    ]
    assert main([*argv, "--out", str(tmp_path / "one")]) == 0
    assert_same(tmp_path / "one" / "patches.npz", out / "patches.npz")
