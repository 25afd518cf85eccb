"""timm models as backbones (`backbone.name=timm:<model>`): timm's tiny `test_*` models on
the CPU, with fresh weights (nothing is downloaded)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.cli import main
from selfsup.config import ConfigError, parse_overrides, resolve
from selfsup.data.streams import synthetic_fields
from selfsup.runs import load_backbone
from selfsup.tasks import list_tasks, task_config_class
from selfsup.train import build_model, train
from tests.helpers import one_torch_thread, tiny_config  # noqa: F401 (autouse fixture)
from tests.test_task_contract import TINY

timm = pytest.importorskip("timm", reason="timm is not installed: pip install 'selfsup[timm]'")

# A ResNet, a ConvNeXt (unpadded stride-2 convs: at least 32 px) and a ViT (16 px patches).
MODELS = ["test_resnet", "test_convnext", "test_vit"]


@pytest.mark.parametrize("model", MODELS)
def test_layers_are_the_feature_stages_with_timms_names_and_channels(model):
    backbone = build_backbone(f"timm:{model}")
    net = timm.create_model(model, pretrained=False)
    assert list(backbone.layer_names) == [info["module"] for info in net.feature_info]
    assert backbone.aliases == {"final": backbone.layer_names[-1]}
    shapes = backbone.feature_shapes(32)
    assert {name: shape[0] for name, shape in shapes.items()} == backbone.layer_channels
    x = torch.randn(2, 3, 32, 32)
    maps = backbone.forward_layers(x, [backbone.layer_names[1], "final"])
    assert list(maps) == [backbone.layer_names[1], "final"]
    assert torch.equal(maps["final"], backbone(x))


@pytest.mark.parametrize("model", MODELS)
def test_weights_carry_timms_own_names_both_ways(model):
    """The backbone's state dict is the timm model's less what no layer reads (its head, a
    ViT's final norm): it loads into `timm.create_model(model)` and back."""
    backbone = build_backbone(f"timm:{model}")
    net = timm.create_model(model, pretrained=False)
    result = net.load_state_dict(backbone.state_dict(), strict=False)
    assert result.unexpected_keys == []
    assert all(key.startswith(("head", "fc", "norm.")) for key in result.missing_keys)
    assert backbone.load_state_dict(
        {k: v for k, v in net.state_dict().items() if k in backbone.state_dict()}
    )


def test_a_vit_takes_sides_that_are_multiples_of_its_patch():
    backbone = build_backbone("timm:test_vit")
    assert backbone(torch.randn(1, 3, 48, 32)).shape[-2:] == (3, 2)
    with pytest.raises(ValueError, match="multiples of its 16 px patch"):
        backbone(torch.randn(1, 3, 40, 40))


@pytest.mark.parametrize("model", ["test_resnet", "test_vit"])
@pytest.mark.parametrize("name", list_tasks())
def test_every_task_trains_on_a_timm_backbone(name, model):
    section = {**TINY.get(name, {})}
    if name == "counting":
        section["crop_size"] = 32  # 16 px tiles: one ViT patch
    values = {"task": name, "backbone": {"name": f"timm:{model}"}, name: section}
    task = build_model(resolve(values, task_config_class))
    size = max(32, task.min_image_size())
    fields = synthetic_fields(task.inputs(), 4, size, torch.Generator().manual_seed(0))
    views = task.make_views(**fields, generator=torch.Generator().manual_seed(0))
    out = task(views)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.backbone.parameters())


def test_settings_of_selfsups_own_architectures_are_refused():
    for setting in ("backbone.width=0.5", "backbone.stem=small", "backbone.num_stages=3"):
        key = setting.split("=")[0]
        with pytest.raises(ConfigError, match=rf"{key}: does not apply to timm models"):
            tiny_config("x.npz", "backbone.name=timm:test_resnet", setting)


def test_unknown_model_and_missing_timm_are_named(monkeypatch):
    with pytest.raises(ConfigError, match=r"timm has no model 'resnet_nope'.*timm.list_models"):
        build_backbone("timm:resnet_nope")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now fails
    with pytest.raises(ConfigError, match=r"pip install 'selfsup\[timm\]'"):
        build_backbone("timm:test_resnet")


def test_views_the_trunk_cannot_take_are_refused_before_training(tiny_npz, tmp_path):
    run = tmp_path / "run"
    convnext = ["backbone.name=timm:test_convnext", "counting.crop_size=32"]  # 16 px tiles
    with pytest.raises(ConfigError, match=r"`tiles` views are 16 px.*at least 32 px"):
        train(tiny_config(tiny_npz, *convnext), run, progress=False)
    vit = ["task=rotation", "backbone.name=timm:test_vit", "data.image_size=40"]
    cfg = resolve(parse_overrides([*vit, f"data.path={tiny_npz}"]), task_config_class)
    with pytest.raises(ConfigError, match=r"`images` views are 40 px.*multiples of its 16 px"):
        train(cfg, run, progress=False)
    # Every sub-task of a multi-task run, also those a step may leave out (sampling=random).
    multitask = [
        "task=multitask",
        "backbone.name=timm:test_vit",
        "multitask.tasks=[rotation,counting]",
        "multitask.sampling=random",
        "multitask.settings.counting.crop_size=24",  # 12 px tiles
    ]
    cfg = resolve(parse_overrides([*multitask, f"data.path={tiny_npz}"]), task_config_class)
    with pytest.raises(ConfigError, match=r"^counting: its `tiles` views are 12 px"):
        train(cfg, run, progress=False)
    assert not run.exists()


def test_the_multitask_lasso_is_refused_on_a_timm_model():
    values = {"task": "multitask", "backbone": {"name": "timm:test_resnet"}}
    values["multitask"] = {"tasks": ["rotation", "exemplar"], "lasso": "on"}
    with pytest.raises(ConfigError, match="not timm models"):
        build_model(resolve(values, task_config_class))
    values["multitask"]["lasso"] = "auto"  # off for a backbone without units
    assert build_model(resolve(values, task_config_class)).alphas is None


def test_a_timm_state_dict_starts_a_run(tmp_path, tiny_npz):
    """train.init_backbone takes a state dict saved from the timm model itself (head and
    all, as .pth or .safetensors)."""
    from safetensors.torch import save_file

    torch.manual_seed(1)
    net = timm.create_model("test_resnet", pretrained=False)
    torch.save(net.state_dict(), tmp_path / "mine.pth")
    save_file(net.state_dict(), str(tmp_path / "mine.safetensors"))
    for file in ("mine.pth", "mine.safetensors"):
        cfg = tiny_config(
            tiny_npz, "backbone.name=timm:test_resnet", f"train.init_backbone={tmp_path / file}"
        )
        backbone = build_model(cfg).backbone
        for key, value in backbone.state_dict().items():
            assert torch.equal(value, net.state_dict()[key]), key
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    cfg = tiny_config(
        tiny_npz, "backbone.name=timm:test_resnet", f"train.init_backbone={tmp_path / 'other.pth'}"
    )
    with pytest.raises(ConfigError, match="not weights of timm:test_resnet"):
        build_model(cfg)


def test_train_probe_knn_inspect_embed_export_and_load_into_timm(tiny_npz, tmp_path):
    """A timm-backbone run goes through the tools like any other: per-layer probes, kNN,
    inspect and embed on its stages, and a safetensors export that loads into timm's model
    by name."""
    run = tmp_path / "run"
    train(tiny_config(tiny_npz, "backbone.name=timm:test_resnet", "train.steps=2"), run, False)
    common = ["--data", str(tiny_npz), "--test", str(tiny_npz), "--quiet"]
    common += ["--cache-dir", str(tmp_path / "cache")]
    probe = tmp_path / "probe.json"
    args = ["--steps", "3", "--layers", "layer1", "final", "--json", str(probe)]
    assert main(["eval", "linear", str(run), *common, *args]) == 0
    assert [row["layer"] for row in json.loads(probe.read_text())["layers"]] == ["layer1", "final"]
    assert main(["eval", "knn", str(run), *common, "--json", str(tmp_path / "knn.json")]) == 0
    inspect = ["--data", str(tiny_npz), "--max-images", "24", "--workers", "0", "--quiet"]
    assert main(["inspect", str(run), "--out", str(tmp_path / "page"), *inspect]) == 0
    assert (tmp_path / "page" / "report.html").is_file()
    embed = ["--layer", "layer2", "--workers", "0", "--quiet", "--out", str(tmp_path / "f.npz")]
    assert main(["embed", str(run), str(tiny_npz), *embed]) == 0

    out = tmp_path / "export" / "backbone.safetensors"
    assert main(["export", str(run), "--format", "safetensors", "--out", str(out)]) == 0
    from safetensors.torch import load_file

    net = timm.create_model("test_resnet", pretrained=False)
    result = net.load_state_dict(load_file(str(out)), strict=False)
    assert result.unexpected_keys == [] and set(result.missing_keys) == {"fc.weight", "fc.bias"}
    trained = load_backbone(str(run)).backbone
    for key, value in trained.state_dict().items():
        assert torch.equal(net.state_dict()[key], value), key
    assert load_backbone(str(out)).backbone.layer_names == trained.layer_names
