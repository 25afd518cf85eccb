"""Files and cache entries appear whole or not at all, also when several jobs write the same
one at once (a sweep of trainings on the same videos fills one mask cache entry)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfsup.outputs import fill_folder_once, written_atomically

ROOT = Path(__file__).resolve().parents[1]


def test_a_file_written_atomically_is_the_old_one_or_a_new_one_whole(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"old")
    with written_atomically(path) as first, written_atomically(path) as second:
        assert first != second and first.parent == second.parent == tmp_path
        np.savez(first, a=np.arange(3))  # names end in .npz: np.savez adds nothing
        np.savez(second, a=np.arange(5))
        assert path.read_bytes() == b"old"  # nothing shows before a writer ends
    with np.load(path) as data:  # the second writer ended first, the first last: it wins
        assert len(data["a"]) == 3
    with pytest.raises(RuntimeError), written_atomically(path) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    with np.load(path) as data:
        assert len(data["a"]) == 3
    assert list(tmp_path.iterdir()) == [path]  # no temporaries left behind


def test_dead_writers_leftovers_go_and_outputs_keep_the_usual_permissions(tmp_path):
    path = tmp_path / "graph.npz"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead = tmp_path / f".graph.npz.{ended.stdout.strip()}-0000.tmp.npz"  # killed mid-write
    dead.write_bytes(b"half")
    alive = tmp_path / f".graph.npz.{os.getpid()}-1111.tmp.npz"  # still writing: kept
    alive.write_bytes(b"writing")
    with written_atomically(path) as temporary:
        np.savez(temporary, a=np.arange(2))
    assert not dead.exists() and alive.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_cache_folder_filled_by_two_jobs_at_once_is_published_whole_once(tmp_path):
    folder, calls = tmp_path / "cache" / "key", []

    def fast(staging: Path) -> None:
        calls.append("fast")
        (staging / "part.txt").write_text("fast")
        (staging / "done.txt").write_text("fast")

    def slow(staging: Path) -> None:  # another job finishes while this one works
        calls.append("slow")
        (staging / "part.txt").write_text("slow")
        fill_folder_once(folder, fast, "done.txt")
        (staging / "done.txt").write_text("slow")

    fill_folder_once(folder, slow, "done.txt")
    assert calls == ["slow", "fast"]
    assert (folder / "part.txt").read_text() == (folder / "done.txt").read_text() == "fast"
    assert [p.name for p in folder.parent.iterdir()] == ["key"]  # no staging folder left
    fill_folder_once(folder, slow, "done.txt")
    assert calls == ["slow", "fast"]  # whole already: nothing computed again


def test_a_killed_fill_is_redone_and_a_failed_one_leaves_nothing(tmp_path):
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "part.txt").write_text("a killed run's part")

    def fill(staging: Path) -> None:
        (staging / "done.txt").write_text("whole")

    fill_folder_once(stale, fill, "done.txt")
    assert sorted(p.name for p in stale.iterdir()) == ["done.txt"]

    def fail(staging: Path) -> None:
        (staging / "part.txt").write_text("half")
        raise ValueError("no frames")

    with pytest.raises(ValueError, match="no frames"):
        fill_folder_once(tmp_path / "failed", fail, "done.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stale"]


def write_clip(folder: Path, frames: int = 8, size: int = 64) -> None:
    """A textured background the camera pans over, a bright square moving across it."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    background = rng.integers(0, 255, (size, size + frames * 2, 3), dtype=np.uint8)
    for t in range(frames):
        frame = background[:, t : t + size].copy()
        frame[20:36, 4 + 5 * t : 20 + 5 * t] = (240, 220, 40)
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)


MASK_JOB = """
import json, sys
import numpy as np
from selfsup.data import open_source
from selfsup.video.cache import mask_dataset
source = open_source(mask_dataset(sys.argv[1], size=64))
images, masks = source.images, source.masks
print(json.dumps([list(images.shape), int(masks.sum()), int(images.astype(np.int64).sum())]))
"""


def test_trainings_started_at_once_share_one_mask_cache_entry(tmp_path):
    """Two processes ask for the masks of the same clip at the same moment: both compute
    them, both read whole, equal masks, and the cache holds one entry and nothing else."""
    write_clip(tmp_path / "clip")
    env = {**os.environ, "SELFSUP_CACHE": str(tmp_path / "cache")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    command = [sys.executable, "-c", MASK_JOB, str(tmp_path / "clip")]
    jobs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [job.communicate(timeout=300) for job in jobs]
    for job, (_, err) in zip(jobs, outputs):
        assert job.returncode == 0, err.decode()[-2000:]
    first, second = (json.loads(out.decode().splitlines()[-1]) for out, _ in outputs)
    assert first == second and first[0][0] == 8 and first[1] > 0
    entries = list((tmp_path / "cache" / "motion_masks").iterdir())
    assert len(entries) == 1 and (entries[0] / "motion_masks.npz").is_file()
