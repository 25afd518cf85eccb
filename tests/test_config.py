from pathlib import Path

import pytest
import yaml

from selfsup.config import ConfigError, ExperimentConfig, dump, field_docs, parse_overrides, resolve
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


def test_malformed_override():
    with pytest.raises(ConfigError, match=r"key\.sub=value"):
        parse_overrides(["optim.lr"])


def test_unknown_task():
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        resolve({"task": "nope"}, task_config_class)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
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
    """The demo relies on the dataclass defaults being configs/counting_small.yaml."""
    values = yaml.safe_load((ROOT / "configs" / "counting_small.yaml").read_text())
    assert dump(resolve(values, task_config_class)) == dump(resolve({}, task_config_class))
