from pathlib import Path

import numpy as np
import pytest
import yaml

from selfsup.config import ConfigError, ExperimentConfig, dump, field_docs, parse_overrides, resolve
from selfsup.presets import config_file, describe, preset_files
from selfsup.tasks import task_config_class

ROOT = Path(__file__).resolve().parents[1]


def resolve_overrides(*items: str):
    return resolve(parse_overrides(list(items)), task_config_class)


def test_defaults_resolve_and_round_trip_through_yaml():
    cfg = resolve({}, task_config_class)
    text = yaml.safe_dump(dump(cfg))
    again = resolve(yaml.safe_load(text), task_config_class)
    assert dump(again) == dump(cfg)
    assert "counting" in yaml.safe_load(text)


def test_dotted_overrides_set_nested_values_with_yaml_types():
    cfg = resolve_overrides(
        "optim.lr=0.01",
        "data.batch_size=64",
        "checkpoint.every=7",
        "counting.downsample_kernels=[area, nearest]",
        "train.compile=true",
    )
    assert cfg.optim.lr == 0.01 and cfg.data.batch_size == 64 and cfg.checkpoint.every == 7
    assert cfg.task_config.downsample_kernels == ["area", "nearest"]
    assert cfg.train.compile == "default"  # `true` still means what it meant


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lrr=0.1", "optim.lrr"),
        ("nosuch.key=1", "nosuch"),
        ("counting.num_count=5", "counting.num_count"),
    ],
)
def test_unknown_key_is_an_error_naming_it(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve_overrides(override)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr=-0.1", "optim.lr"),
        ("optim.lr=0", "optim.lr"),
        ("data.batch_size=fast", "data.batch_size"),
        ("data.batch_size=1.5", "data.batch_size"),
        ("data.cache=disk", "data.cache"),
        ("train.channels_last=maybe", "train.channels_last"),
        ("counting.crop_size=33", "counting.crop_size"),
        ("counting.grayscale_prob=1.5", "counting.grayscale_prob"),
        ("counting.downsample_kernels=[box]", "counting.downsample_kernels"),
    ],
)
def test_bad_values_are_errors_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve_overrides(override)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("counting.hflip_prob=1.01", r"counting\.hflip_prob: must be <= 1\.0, got 1\.01"),
        ("counting.crop_scale=[0.5,1.2]", r"counting\.crop_scale\[1\]: must be <= 1\.0"),
        ("counting.crop_scale=[0,1]", r"counting\.crop_scale\[0\]: must be > 0\.0"),
        ("counting.crop_scale=[0.9,0.5]", r"counting\.crop_scale: values must not decrease"),
        ("counting.crop_scale=[0.5]", r"counting\.crop_scale: expected 2 values, got 1"),
        ("counting.downsample_kernels=[area,box]", r"downsample_kernels\[1\]: 'box' is not one"),
        ("counting.downsample_kernels=[]", r"downsample_kernels: expected at least 1 value"),
        ("exemplar.hue_jitter=0.6", r"exemplar\.hue_jitter: must be <= 0\.5"),
        ("supervised.label_smoothing=1", r"supervised\.label_smoothing: must be < 1\.0"),
        ("optim.lr_step_factor=0", r"optim\.lr_step_factor: must be > 0\.0"),
        ("optim.lr_step_factor=1.5", r"optim\.lr_step_factor: must be <= 1\.0"),
        ("optim.lr_step_every=0", r"optim\.lr_step_every: must be >= 1"),
        ("optim.schedule=poly", r"optim\.schedule: 'poly' is not one"),
    ],
)
def test_declared_bounds_hold_for_numbers_and_each_list_item(override, message):
    """`param`'s high bound, and its bounds, choices and length on lists, replace the checks
    each task once copied: one rule, one message shape."""
    section = override.split(".")[0]
    task = "counting" if section == "optim" else section
    with pytest.raises(ConfigError, match=message):
        resolve({"task": task, **parse_overrides([override])}, task_config_class)


def test_malformed_override():
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        parse_overrides(["optim.lr"])


def test_unknown_task():
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        resolve({"task": "nope"}, task_config_class)


@pytest.mark.parametrize("path", sorted(preset_files().values()), ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    values = yaml.safe_load(path.read_text())
    if values["task"] == "transitive":  # its graph is the run's own, passed with --graph
        values["transitive"]["graph"] = "graph.npz"
    cfg = resolve(values, task_config_class)
    assert cfg.task == values["task"]


def test_every_field_has_help():
    rows = field_docs(ExperimentConfig)
    assert {"optim.lr", "data.batch_size", "checkpoint.every"} <= {r[0] for r in rows}
    assert all(help_text for *_, help_text in rows)


def test_commented_yaml_round_trips_and_documents_every_key():
    from selfsup.config import commented_yaml

    cfg = resolve_overrides("optim.lr=0.02", "counting.crop_size=16")
    text = commented_yaml(cfg)
    assert dump(resolve(yaml.safe_load(text), task_config_class)) == dump(cfg)
    assert "# Peak learning rate" in text and "# k, the size of the counting vector" in text


def test_small_config_spells_out_the_defaults():
    """The demo relies on the dataclass defaults being the counting_small preset."""
    values = yaml.safe_load(preset_files()["counting_small"].read_text())
    assert dump(resolve(values, task_config_class)) == dump(resolve({}, task_config_class))


def test_config_names_a_preset_or_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert set(preset_files()) >= {"counting_small", "multitask_small", "transitive_small"}
    assert config_file("counting_small") == preset_files()["counting_small"]
    assert config_file("counting_small.yaml") == preset_files()["counting_small"]
    # A file that exists wins over the preset of the same name.
    (tmp_path / "counting_small.yaml").write_text("task: counting\n")
    assert config_file("counting_small.yaml") == Path("counting_small.yaml")
    with pytest.raises(ConfigError, match=r"--config nope: no such file.*counting_small"):
        config_file("nope")
    with pytest.raises(ConfigError, match="not a preset"):
        config_file("elsewhere/counting_small")  # a path is never read as a preset name


def test_list_configs_and_train_from_a_preset_outside_the_repository(tmp_path, monkeypatch, capsys):
    from selfsup.cli import main
    from tests.conftest import make_images

    monkeypatch.chdir(tmp_path)
    assert main(["list", "configs"]) == 0
    listed = capsys.readouterr().out
    for name, path in preset_files().items():
        task, about = describe(path)
        assert name in listed and task in listed and about in listed and about
    images, _ = make_images(16, size=32)
    np.savez(tmp_path / "train.npz", images=images)
    argv = ["train", "multitask", "--config", "multitask_small", "--data", "train.npz"]
    tiny = ["--steps", "2", "--quiet", "data.batch_size=8", "data.workers=0"]
    assert main([*argv, "--out", "run", "--tasks", "rotation", *tiny]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    preset = yaml.safe_load(preset_files()["multitask_small"].read_text())
    assert saved["backbone"] == {**saved["backbone"], **preset["backbone"]}
    assert saved["optim"]["lr"] == preset["optim"]["lr"] != ExperimentConfig().optim.lr
    assert main(["train", "counting", "--config", "count_small", "--data", "train.npz",
                 "--out", "run2", *tiny]) == 2  # fmt: skip
    assert "--config count_small: no such file" in capsys.readouterr().err
