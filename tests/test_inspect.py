"""`selfsup inspect`: the report's sections, its figures, and the task-specific parts."""

from __future__ import annotations

import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from selfsup import checkpoint
from selfsup.analysis.curves import numeric_keys
from selfsup.analysis.feature_map import pca, project_2d
from selfsup.analysis.lasso import find_lasso_alphas
from selfsup.cli import main
from selfsup.train import train
from tests.conftest import make_images
from tests.helpers import tiny_config


class ReportParser(HTMLParser):
    """Section ids, image sources and visible text of a report."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        values = dict(attrs)
        if tag == "section":
            self.sections.append(values["id"])
        if tag == "img":
            self.images.append(values["src"])

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse_report(folder: Path) -> ReportParser:
    parser = ReportParser()
    parser.feed((folder / "report.html").read_text(encoding="utf-8"))
    return parser


def check_images_exist(folder: Path, report: ReportParser) -> None:
    assert report.images
    for src in report.images:
        assert not Path(src).is_absolute() and (folder / src).is_file(), src
        with Image.open(folder / src) as image:
            assert image.format == "PNG" and min(image.size) > 10


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models and 40-point t-SNE: one thread is as fast, and on a CPU shared with other
    # work more threads spin-wait (t-SNE: 0.2 s with one thread, 8 s with all).
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("inspect")
    paths = {}
    for name, seed in (("train", 0), ("held_out", 1)):
        images, labels = make_images(48, seed=seed)
        paths[name] = folder / f"{name}.npz"
        np.savez(paths[name], images=images, labels=labels, class_names=np.array(list("abcd")))
    paths["run"] = folder / "run"
    train(tiny_config(paths["train"], "train.steps=4"), paths["run"], progress=False)
    return paths


def test_counting_report_has_every_section_and_its_images(data, tmp_path):
    out = tmp_path / "report"
    args = ["--data", str(data["held_out"]), "--max-images", "40", "--workers", "0", "--quiet"]
    assert main(["inspect", str(data["run"]), "--out", str(out), *args]) == 0
    report = parse_report(out)
    assert report.sections == ["summary", "curves", "counting", "retrieval", "map"]
    check_images_exist(out, report)
    text = " ".join(report.text)
    assert "units ever non-zero" in text and "random init" in text and "held-out images" in text
    assert "40 from" in text  # --max-images bounds the sample
    assert "t-SNE" in text or "PCA" in text


def test_unknown_task_gets_generic_sections_and_a_found_lasso(data, tmp_path):
    """A checkpoint of a task this code does not know (here: a multi-task run written by
    other code) still gets curves, retrieval and map, plus the lasso heat map found by name."""
    run = tmp_path / "multitask_run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(data["run"] / "metrics.jsonl", run / "metrics.jsonl")
    state = checkpoint.load(data["run"] / "checkpoints" / "last.pt")
    state["config"] = {**state["config"], "task": "some_future_multitask"}
    state["config"]["some_future_multitask"] = {"tasks": ["rel_pos", "color", "exemplar"]}
    alpha = torch.rand(3, 5)
    state["model"]["trunk_views.lasso.alpha"] = alpha
    state["model"]["heads.0.trunk.lasso.alpha"] = alpha  # the same shared module, again
    checkpoint.save_atomic(state, run / "checkpoints" / "last.pt")
    out = tmp_path / "report"
    settings = ["--max-images", "24", "--workers", "0", "--quiet"]
    assert main(["inspect", str(run), "--out", str(out), *settings]) == 0
    report = parse_report(out)
    assert report.sections == ["summary", "curves", "retrieval", "map", "lasso"]
    check_images_exist(out, report)
    assert len([src for src in report.images if src.startswith("lasso")]) == 1
    assert "nothing is held out" not in " ".join(report.text)  # only counting says it


def test_lasso_alphas_are_found_by_name_only():
    alpha = torch.ones(2, 4)
    state = {
        "multitask.lasso.alpha": alpha,
        "lasso.scale": torch.ones(2, 4),  # not an alpha
        "head.alpha": torch.ones(2, 4),  # not under a lasso
        "lasso.alpha_bias": torch.ones(4),  # not 2-D
    }
    assert list(find_lasso_alphas(state)) == ["multitask.lasso.alpha"]


def test_curves_plot_every_numeric_key_and_nothing_else():
    records = [
        {"step": 2, "loss": 1.0, "lr": 0.1, "rel_pos_loss": 2.0, "note": "x", "flag": True},
        {"step": 4, "loss": 0.5, "images_per_sec": 10},
    ]
    assert numeric_keys(records) == ["loss", "lr", "rel_pos_loss", "images_per_sec"]


def test_pca_fallback_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # import now fails
    line = torch.linspace(-1, 1, 20)[:, None] * torch.tensor([[1.0, 2.0, 3.0]])
    points, method = project_2d(line + 5)
    assert method == "PCA" and points.shape == (20, 2)
    assert points[:, 1].abs().max() < 1e-4  # a line has one principal direction
    assert torch.allclose(points[:, 0].abs(), (line.norm(dim=1)), atol=1e-4)
    assert pca(torch.randn(4, 10), 50).shape == (4, 4)
