"""Outputs read back (selfsup.outputs): each command accepts what the user gave the command
that wrote its input, with and without extensions, and names a path that is not that."""

import json

import numpy as np
import pytest

from selfsup.cli import main
from tests.helpers import TINY, TRACKER
from tests.test_graph import COMMON, tiny_patches

GRAPH = ["--quiet", "clusters=2", "neighbours=5", "backend=torch"]
TRANSITIVE = [*COMMON, "data.image_size=16", "transitive.crop_size=16",
              "transitive.pairs_per_batch=8"]  # fmt: skip


def run(*argv: str) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A folder with a 1-step counting run, labelled images and a `video patches`-like
    folder of patches (patches/patches.npz)."""
    from tests.conftest import make_images

    root = tmp_path_factory.mktemp("outputs")
    images, labels = make_images(48)
    np.savez(root / "images.npz", images=images, labels=labels)
    (root / "patches").mkdir()
    tiny_patches(root / "patches" / "patches.npz")
    run("train", "counting", "--data", root / "images.npz", "--out", root / "run", "--steps", "1",
        "--quiet", *TINY)  # fmt: skip
    return root


@pytest.mark.parametrize(
    ("typed", "written"), [("g", "g.npz"), ("g.npz", "g.npz"), ("graphs/", "graphs/graph.npz")]
)
def test_graph_build_output_reads_back_as_typed(
    work, tmp_path, typed, written, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    run("graph", "build", "--patches", work / "patches", "--embed", work / "run", "--out", typed,
        *GRAPH)  # fmt: skip
    assert (tmp_path / written).is_file()
    assert f"wrote {written}" in capsys.readouterr().out
    run("graph", "stats", typed, "--patches", work / "patches")
    assert json.loads(capsys.readouterr().out)["intra_pairs"] == 12
    run("train", "transitive", "--out", "ti", "--steps", "1", "--quiet", *TRANSITIVE,
        f"transitive.graph={typed}", f"data.path={work / 'patches'}")  # fmt: skip
    run("train", "transitive", "--graph", typed, "--out", "ti2", "--steps", "1", "--quiet",
        *TRANSITIVE)  # fmt: skip
    if typed == "g":  # the graph page of `inspect` (slower: it draws image grids)
        run("inspect", typed, "--out", "page")
        assert "intra_pairs" in (tmp_path / "page" / "report.html").read_text()


def test_export_embed_eval_and_report_read_back_as_typed(work, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = ["--data", work / "images.npz", "--test", work / "images.npz"]
    knn = ["--k", "5", "--no-cache", "--quiet"]
    run("export", work / "run", "--format", "safetensors", "--out", "m")
    assert (tmp_path / "m.safetensors").is_file() and (tmp_path / "m.safetensors.json").is_file()
    run("export", work / "run", "--format", "safetensors", "--out", "exported/")
    assert (tmp_path / "exported" / "backbone.safetensors").is_file()
    for model in ("m", "m.safetensors", "exported"):
        run("embed", model, work / "images.npz", "--out", f"features_{model}", "--quiet")
        with np.load(tmp_path / f"features_{model}.npz") as saved:
            assert saved["features"].shape[0] == 48
    run("eval", "knn", "m", *data, *knn, "--json", "knn")
    assert json.loads((tmp_path / "knn.json").read_text())["protocol"] == "knn"
    run("report", "knn", *data, "--out", "report", "--protocol", "knn", "--quiet")
    run("report", "report", "knn.json", *data, "--out", "report2", "--protocol", "knn")
    assert len(json.loads((tmp_path / "report2" / "results.json").read_text())) == 2
    capsys.readouterr()
    run("export", work / "run", "--format", "torchscript", "--out", "ts")
    assert "wrote ts.pt" in capsys.readouterr().out
    # Not a RUN selfsup reads back (it is for use outside selfsup): said so, naming the file.
    assert main(["embed", "ts.pt", str(work / "images.npz"), "--out", "f", "--quiet"]) == 2
    assert "ts.pt: a backbone exported as torchscript" in capsys.readouterr().err


def test_paths_that_name_nothing_usable_are_errors_that_say_what_was_expected(
    work, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(["graph", "stats", "g"]) == 2
    assert "g: no graph there (expected a graph file written by `selfsup graph build`" in (
        capsys.readouterr().err
    )
    assert main(["graph", "stats", str(work / "patches")]) == 2  # a folder without graph.npz
    assert "graph.npz" in capsys.readouterr().err
    assert main(["graph", "stats", str(work / "images.npz")]) == 2
    err = capsys.readouterr().err
    assert "images.npz: not a graph file (written by `selfsup graph build`)" in err
    assert main(["graph", "stats", str(work / "run" / "config.yaml")]) == 2
    assert "config.yaml: not a graph file" in capsys.readouterr().err
    assert main(["graph", "build", "--patches", "nowhere", "--embed", str(work / "run"),
                 "--out", "g"]) == 2  # fmt: skip
    assert "nowhere: no patch dataset there" in capsys.readouterr().err
    assert main(["embed", "nothing", str(work / "images.npz"), "--out", "f"]) == 2
    assert "nothing: not a run folder" in capsys.readouterr().err
    (tmp_path / "taken").write_text("a file")
    with pytest.raises(SystemExit):  # several-file commands write folders
        main(["train", "counting", "--data", str(work / "images.npz"), "--out", "taken"])
    assert "taken: is a file, but this command writes a folder" in capsys.readouterr().err


def test_video_outputs_read_back_as_typed(work, tmp_path, monkeypatch):
    pytest.importorskip("cv2")
    from selfsup.data import open_source
    from selfsup.video.cache import mask_dataset
    from tests.test_video import synthetic_clip, write_frames

    monkeypatch.chdir(tmp_path)
    for i in range(2):
        write_frames(tmp_path / "videos" / f"v{i}", synthetic_clip(frames=8, seed=10 * i)[0])
    masks = ["--size", "96", "--quiet", "flow_size=96", "min_residual=1", "morph_kernel=3"]
    run("video", "masks", "videos", "--out", "masks", *masks)
    source = open_source(mask_dataset("masks"))  # what `train multitask --videos masks` reads
    frames, motion = source.images, source.masks
    assert frames.shape[:3] == motion.shape and motion.any()
    run("train", "motion-segmentation", "--data", "masks", "--out", "ms", "--steps", "1",
        "--quiet", *COMMON, "data.image_size=32")  # fmt: skip
    run("video", "patches", "videos", "--out", "patches", "--size", "96", "--quiet",
        "seed_every=4", "patch_every=2", "patch_size=32", "masks.flow_size=96",
        "masks.min_residual=1", "masks.morph_kernel=3", "masks.min_area=0.005",
        f"track.tracker={TRACKER}")  # fmt: skip
    run("train", "counting", "--data", "patches", "--out", "count", "--steps", "1", "--quiet",
        *TINY, "data.batch_size=4")  # fmt: skip
    run("graph", "build", "--patches", "patches", "--embed", work / "run", "--out", "g",
        "--quiet", "clusters=1", "neighbours=3", "backend=torch")  # fmt: skip
    run("graph", "stats", "g", "--patches", "patches")
