import json

import numpy as np
import pytest
import torch

from selfsup.cli import main
from selfsup.eval.features import extract_features, pooled_grid
from selfsup.eval.linear import ProbeSettings, accuracy, format_table, train_linear_probe
from selfsup.runs import load_backbone
from tests.helpers import tiny_config


def test_pooled_grid_keeps_dimensions_near_the_budget():
    assert pooled_grid(64, 32, 4096) == 8  # 64 * 8 * 8 = 4096
    assert pooled_grid(256, 4, 4096) == 4
    assert pooled_grid(384, 8, 4096) == 3  # 3456 dims
    assert pooled_grid(4096, 2, 1024) == 1  # never below one cell


def test_accuracy_top_k():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05]])
    labels = torch.tensor([1, 1])
    assert accuracy(logits, labels) == 0.5 and accuracy(logits, labels, 2) == 1.0


def test_probe_separates_linearly_separable_features():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 20, generator=generator) * 3
    labels = torch.arange(500) % 5
    features = centres[labels] + torch.randn(500, 20, generator=generator)
    result = train_linear_probe(
        features[:400], labels[:400], features[400:], labels[400:], 5, ProbeSettings()
    )
    assert result.top1 > 0.95 and result.top5 == 1.0 and result.dims == 20


def test_probe_is_at_chance_on_random_labels():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(600, 10, generator=generator)
    labels = torch.randint(0, 4, (600,), generator=generator)
    result = train_linear_probe(
        features[:400], labels[:400], features[400:], labels[400:], 4, ProbeSettings()
    )
    assert result.top1 < 0.4


def test_features_cover_every_probe_layer_with_bounded_dims():
    loaded = load_backbone("random:alexnet_small")
    images = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    layers = list(loaded.backbone.probe_layers)
    features = extract_features(
        loaded.backbone,
        images,
        layers,
        device=torch.device("cpu"),
        amp_dtype=None,
        max_dims=1024,
        batch_size=4,
        progress=False,
    )
    assert list(features) == layers
    for layer, feats in features.items():
        assert feats.shape[0] == 10 and 0 < feats.shape[1] <= 1024, layer
        assert torch.isfinite(feats.float()).all()


def test_table_has_a_row_per_layer_and_a_column_per_model():
    from selfsup.eval.linear import ProbeResult

    r = ProbeResult(top1=0.5, top5=0.9, train_top1=0.6, dims=10, steps=1)
    table = format_table({"a": {"conv1": r, "conv2": r}, "b": {"conv1": r}})
    lines = table.splitlines()
    assert lines[0] == "| layer | a | b |" and len(lines) == 4 and "50.0" in lines[2]


def test_eval_linear_cli_on_a_trained_run_and_random_init(tiny_npz, tmp_path, capsys):
    from selfsup.train import train

    run = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=2"), run, progress=False)
    for extra in ([], ["--random-init"]):
        out = tmp_path / f"probe{len(extra)}.json"
        code = main(
            [
                "eval",
                "linear",
                str(run),
                "--data",
                str(tiny_npz),
                "--test",
                str(tiny_npz),
                "--json",
                str(out),
                "--steps",
                "5",
                "--weight-decay",
                "1e-3",
                "--quiet",
                "--layers",
                "conv1",
                "conv5",
                *extra,
            ]
        )
        assert code == 0
        result = json.loads(out.read_text())
        assert [row["layer"] for row in result["layers"]] == ["conv1", "conv5"]
        assert all(0 <= row["top1"] <= 1 for row in result["layers"])
    assert result["model"] == "random:alexnet_small" and result["step"] == 0
    assert "| conv1 |" in capsys.readouterr().out


def test_eval_needs_labels(tmp_path, tiny_npz, capsys):
    unlabelled = tmp_path / "u.npz"
    np.savez(unlabelled, images=np.zeros((4, 32, 32, 3), np.uint8))
    code = main(
        [
            "eval",
            "linear",
            "random:alexnet_small",
            "--data",
            str(unlabelled),
            "--test",
            str(tiny_npz),
            "--steps",
            "1",
            "--quiet",
        ]
    )
    assert code == 2 and "needs labels" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["nonexistent_run_folder"])
def test_eval_names_a_missing_run(spec, tiny_npz, capsys):
    code = main(["eval", "linear", spec, "--data", str(tiny_npz), "--test", str(tiny_npz)])
    assert code == 2 and spec in capsys.readouterr().err
