from selfsup.data import open_source
from selfsup.demo import run_demo, sample_path
from selfsup.eval.linear import ProbeSettings


def test_bundled_sample_is_real_labelled_cifar10():
    train, test = open_source(sample_path("train")), open_source(sample_path("test"))
    assert len(train) == 5000 and len(test) == 1000
    assert train.class_names[:2] == ["airplane", "automobile"]
    assert sorted(set(train.labels.tolist())) == list(range(10))
    assert train.load(0).shape == (32, 32, 3)


def test_demo_pretrains_and_prints_a_table_against_random_init(tmp_path, capsys):
    results = run_demo(
        str(tmp_path / "demo"), steps=2, probe=ProbeSettings(weight_decays=(1e-2,), steps=3)
    )
    assert set(results) == {"demo", "random:alexnet_small"}
    out = capsys.readouterr().out
    assert "| demo | linear |" in out and "| random:alexnet_small | linear |" in out
    assert (tmp_path / "demo" / "linear_probe.json").is_file()
