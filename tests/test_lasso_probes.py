"""Probes of a multi-task lasso run read only layers that trained, and can read what each
head read: `lasso:<task>`, the task's combination of units, from the checkpoint."""

import json

import pytest
import torch
import yaml

from selfsup.backbones import build_backbone
from selfsup.cli import main
from selfsup.config import ConfigError
from selfsup.eval.protocol import EvalOptions, knn_eval, load_labelled
from selfsup.runs import load_backbone, untrained_layers
from selfsup.train import build_model, train
from tests.test_multitask import multitask_config

TASKS = ["rotation", "exemplar"]


@pytest.fixture
def lasso_run(tiny_npz, tmp_path):
    folder = tmp_path / "lasso"
    run = train(multitask_config(tiny_npz, "train.steps=2", "multitask.lasso=on"), folder, False)
    return folder, run


def test_a_lasso_runs_final_layer_never_trains_and_probes_avoid_it(lasso_run, tiny_npz):
    folder, run = lasso_run
    final = run.model.backbone.stages["final"][0]  # the trunk's own BN of `final`
    assert int(final.num_batches_tracked) == 0  # never ran in training
    loaded = load_backbone(str(folder))
    assert set(loaded.untrained) == {"final"}
    assert loaded.probe_layers == ["stem", "layer1", "layer2"]  # layer2: the last unit
    assert loaded.final_layer == "layer2"
    data = load_labelled(str(tiny_npz), 32, workers=0, progress=False)
    options = EvalOptions(device="cpu", cache_dir=None, progress=False)
    assert [row["layer"] for row in knn_eval(loaded, data, data, options=options)["layers"]] == [
        "layer2"
    ]
    with pytest.raises(ConfigError, match=r"\['final'\] never trained.*lasso run.*lasso:rotation"):
        knn_eval(loaded, data, data, layers=["final"], options=options)


def test_layers_after_a_lower_lasso_stage_keep_their_initial_weights(tiny_npz, tmp_path):
    cfg = multitask_config(tiny_npz, "train.steps=2", "multitask.lasso_stage=1")
    initial = {k: v.clone() for k, v in build_model(cfg).backbone.state_dict().items()}
    run = train(cfg, tmp_path / "stage1", progress=False)
    trained = run.model.backbone.state_dict()
    saved = yaml.safe_load((tmp_path / "stage1" / "config.yaml").read_text())
    untrained = untrained_layers(saved, run.model.backbone)
    assert set(untrained) == {"layer2.0", "layer2.1", "layer2", "final"}
    for key, value in trained.items():  # every parameter of stage 2 and `final` as it started
        stage = key.split(".")[1]
        if stage.startswith(("layer2_", "final")):
            assert torch.equal(value, initial[key]), key
        elif key.endswith("weight") and stage.startswith(("stem", "layer1_")):
            assert not torch.equal(value, initial[key]), key


def test_lasso_task_layers_are_what_each_head_reads(lasso_run):
    folder, run = lasso_run
    loaded = load_backbone(str(folder))
    readout = loaded.reader(["lasso:rotation", "layer1"])
    x = torch.randn(4, 3, 32, 32)
    run.model.eval()
    with torch.no_grad():
        maps = readout.forward_layers(x, ["lasso:rotation", "layer1", "lasso:exemplar"])
        for name in TASKS:  # the task's view of the trunk, as its head reads it
            torch.testing.assert_close(maps[f"lasso:{name}"], run.model.subtasks[name].backbone(x))
        torch.testing.assert_close(
            maps["layer1"], run.model.backbone.forward_layers(x, ["layer1"])["layer1"]
        )
    # Its random-init baseline has the same layers (fresh weights, a uniform alpha).
    fresh = load_backbone(str(folder), random_init=True)
    assert fresh.readout is not None and fresh.untrained == loaded.untrained


def test_eval_reads_lasso_task_layers_and_refuses_untrained_ones(lasso_run, tiny_npz, tmp_path,
                                                                capsys):  # fmt: skip
    folder, _ = lasso_run
    common = ["--data", str(tiny_npz), "--test", str(tiny_npz), "--quiet", "--no-cache"]
    out = tmp_path / "knn.json"
    layers = ["--layers", "lasso:rotation", "lasso:exemplar", "layer2"]
    assert main(["eval", "knn", str(folder), *common, *layers, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["layer"] for row in result["layers"]] == ["lasso:rotation", "lasso:exemplar",
                                                          "layer2"]  # fmt: skip
    linear = ["eval", "linear", str(folder), *common, "--steps", "3", "--weight-decay", "1e-3"]
    assert main([*linear, "--layers", "lasso:exemplar", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["layers"][0]["layer"] == "lasso:exemplar"
    capsys.readouterr()
    assert main([*linear, "--layers", "final"]) == 2
    assert "never trained" in capsys.readouterr().err


def test_lasso_layers_only_exist_in_lasso_runs(tiny_npz, tmp_path):
    cfg = multitask_config(tiny_npz, "train.steps=1", "multitask.lasso=off")
    train(cfg, tmp_path / "plain", progress=False)
    loaded = load_backbone(str(tmp_path / "plain"))
    assert loaded.untrained == {} and "final" in loaded.probe_layers
    with pytest.raises(ConfigError, match="layers a multi-task lasso run's heads read"):
        loaded.reader(["lasso:rotation"])
    trunk = build_backbone("resnet18", stem="small", width=0.125, num_stages=2)
    assert untrained_layers({"task": "rotation"}, trunk) == {}
