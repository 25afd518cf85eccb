import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfsup.checkpoint import CheckpointError
from selfsup.cli import main
from selfsup.data import DataFormatError
from selfsup.data.trunk_input import TrunkInput
from selfsup.eval import linear
from selfsup.eval.knn import KnnSettings, knn_votes, weighted_knn
from selfsup.eval.linear import ProbeSettings, accuracy, train_linear_probe
from selfsup.eval.protocol import EvalOptions, LabelledImages, knn_eval, linear_eval, load_labelled
from selfsup.eval.report import table, write_report
from selfsup.features import cached_features, extract_features, pooled_grid
from selfsup.runs import load_backbone
from selfsup.train import train
from tests.helpers import tiny_config

CPU = {
    "device": torch.device("cpu"),
    "amp_dtype": None,
    "progress": False,
    "trunk_input": TrunkInput(),
}


def fp32_on(device: torch.device) -> dict:
    """extract_features keywords: fp32 on `device`, quiet."""
    return {"device": device, "amp_dtype": None, "progress": False, "trunk_input": TrunkInput()}


def clusters(n: int, classes: int, dims: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=generator) * 3
    labels = torch.arange(n) % classes
    return centres[labels] + torch.randn(n, dims, generator=generator), labels


def test_pooled_grid_keeps_dimensions_near_the_budget():
    assert pooled_grid(64, 32, 4096) == 8  # 64 * 8 * 8 = 4096
    assert pooled_grid(256, 4, 4096) == 4
    assert pooled_grid(384, 8, 4096) == 3  # 3456 dims
    assert pooled_grid(4096, 2, 1024) == 1  # never below one cell
    assert pooled_grid(64, 32, 0) == 1  # 0: global pooling


def test_accuracy_top_k():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05]])
    labels = torch.tensor([1, 1])
    assert accuracy(logits, labels) == 0.5 and accuracy(logits, labels, 2) == 1.0


def test_probe_reaches_100_percent_on_separable_clusters(device):
    x, y = clusters(500, 5, 20, seed=0)
    x = x.to(device)  # the labels stay on the CPU: the probe moves them to the features
    result = train_linear_probe(x[:400], y[:400], x[400:], y[400:], 5)
    assert result.top1 == 1.0 and result.top5 == 1.0 and result.dims == 20
    assert set(result.val_top1) == {f"{wd:g}" for wd in ProbeSettings.weight_decays}


def test_probe_is_at_chance_on_shuffled_labels():
    x, y = clusters(800, 4, 10, seed=1)
    shuffled = y[torch.randperm(800, generator=torch.Generator().manual_seed(2))]
    result = train_linear_probe(x[:600], shuffled[:600], x[600:], shuffled[600:], 4)
    assert result.top1 < 0.35  # chance is 0.25


def test_weight_decay_is_chosen_without_looking_at_the_test_set(monkeypatch):
    """Selection sees only training rows: the test features never reach it."""
    x, y = clusters(300, 3, 8, seed=3)
    test_x = torch.full((50, 8), float("nan"))  # would poison any fit that touched it
    seen = []
    original = linear.select_weight_decay

    def spy(train_x, *args):
        seen.append(train_x)
        return original(train_x, *args)

    monkeypatch.setattr(linear, "select_weight_decay", spy)
    result = train_linear_probe(x, y, test_x, torch.zeros(50, dtype=torch.long), 3)
    assert len(seen) == 1 and seen[0] is x
    assert np.isfinite(list(result.val_top1.values())).all()
    fit_rows, val_rows = linear.validation_split(y, 0.1, 0)
    assert len(set(fit_rows.tolist()) & set(val_rows.tolist())) == 0
    assert len(fit_rows) + len(val_rows) == len(y)


def overlapping_clusters(seed: int, dims: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Correlated features and 20 % noisy labels: an ill-conditioned probe that L-BFGS takes
    tens of iterations to converge on, and whose answer depends on how well it is fitted."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3000) % 6
    centres = torch.randn(6, dims, generator=generator)
    latent = centres[labels] * 0.5 + torch.randn(3000, dims, generator=generator)
    mixing = torch.randn(dims, dims, generator=generator) * torch.logspace(0, -2, dims)
    noisy = torch.rand(3000, generator=generator) < 0.2
    labels = torch.where(noisy, torch.randint(0, 6, (3000,), generator=generator), labels)
    return latent @ mixing, labels


def test_stopping_on_tolerance_matches_a_fit_run_to_the_cap():
    x, y = overlapping_clusters(seed=5)
    x, test_x = linear.standardise(x[:2400], x[2400:])
    train_y, test_y = y[:2400], y[2400:]
    full, full_steps = linear.fit_logistic(x, train_y, 6, 1e-3, 300)
    quick, quick_steps = linear.fit_logistic(x, train_y, 6, 1e-3, 300, None, 1e-3, 10)
    assert quick_steps < 0.8 * full_steps
    with torch.no_grad():
        agree = (full(test_x).argmax(1) == quick(test_x).argmax(1)).float().mean().item()
        gap = abs(accuracy(full(test_x), test_y) - accuracy(quick(test_x), test_y))
    assert agree > 0.97 and gap < 0.01


def test_selection_on_a_subsample_keeps_the_prior_strength(monkeypatch):
    """Fitted on n of N rows, each candidate's weight decay is scaled by N / n (the same prior
    for a mean loss); the winner warm-starts the final fit on all rows."""
    x, y = overlapping_clusters(seed=6)
    calls = []
    original = linear.fit_logistic

    def spy(fit_x, fit_y, num_classes, weight_decay, *args):
        calls.append((len(fit_x), weight_decay, args[1] is not None))
        return original(fit_x, fit_y, num_classes, weight_decay, *args)

    monkeypatch.setattr(linear, "fit_logistic", spy)
    settings = ProbeSettings(weight_decays=(1e-2, 1e-3), selection_rows=500)
    result = train_linear_probe(x[:2000], y[:2000], x[2000:], y[2000:], 6, settings)
    (rows, strong, _), (_, weak, warm), (final_rows, final_wd, final_warm) = calls
    assert rows == 500 and final_rows == 2000
    assert strong == pytest.approx(1e-2 * 2000 / 500) and weak == pytest.approx(1e-3 * 4)
    assert warm and final_warm and final_wd == result.weight_decay
    assert result.top1 > 0.5  # chance is 1/6


def test_knn_matches_a_brute_force_reference(device):
    generator = torch.Generator().manual_seed(4)
    train_x, train_y = torch.randn(120, 6, generator=generator), torch.randint(0, 3, (120,))
    test_x = torch.randn(30, 6, generator=generator)
    settings = KnnSettings(k=7, temperature=0.5, chunk=8)
    scores = knn_votes(train_x.to(device), train_y, test_x.to(device), 3, settings)
    assert scores.device.type == device.type
    scores = scores.cpu()
    for i in range(30):
        sims = [
            float(torch.dot(test_x[i], train_x[j]) / (test_x[i].norm() * train_x[j].norm()))
            for j in range(120)
        ]
        nearest = sorted(range(120), key=lambda j: -sims[j])[:7]
        expected = [0.0, 0.0, 0.0]
        for j in nearest:
            expected[int(train_y[j])] += float(np.exp(sims[j] / 0.5))
        assert torch.allclose(scores[i], torch.tensor(expected), rtol=1e-4)


def test_knn_classifies_clusters(device):
    x, y = clusters(400, 4, 16, seed=5)
    x, y = x.to(device), y.to(device)
    result = weighted_knn(x[:300], y[:300], x[300:], y[300:], 4, KnnSettings(k=20))
    assert result.top1 > 0.95 and result.k == 20


def test_knn_on_cuda_matches_cpu(cuda, monkeypatch):
    """The same features give the same scores on both devices: in fp32 (no TF32) the
    similarities agree to ~1e-6, far inside every row's gap between its k-th and (k+1)-th
    neighbour, so the neighbour sets are the same and the votes agree to float rounding."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    generator = torch.Generator().manual_seed(3)
    train_x, test_x = (
        torch.randn(400, 8, generator=generator),
        torch.randn(100, 8, generator=generator),
    )
    train_y = torch.randint(0, 5, (400,), generator=generator)
    settings = KnnSettings(k=20, temperature=0.1, chunk=64)
    similarity = F.normalize(test_x, dim=1) @ F.normalize(train_x, dim=1).T
    ranked = similarity.topk(21, dim=1).values
    assert (ranked[:, 19] - ranked[:, 20]).min() > 1e-5  # no near-ties at the cut
    on_cpu = knn_votes(train_x, train_y, test_x, 5, settings)
    on_cuda = knn_votes(train_x.to(cuda), train_y, test_x.to(cuda), 5, settings)
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-4, atol=1e-4)


def test_probe_on_cuda_matches_cpu(cuda):
    """L-BFGS's path differs by float rounding only; the test accuracy must agree closely."""
    x, y = overlapping_clusters(seed=8, dims=64)
    settings = ProbeSettings(weight_decays=(1e-3, 1e-2))
    on_cpu = train_linear_probe(x[:2400], y[:2400], x[2400:], y[2400:], 6, settings)
    x = x.to(cuda)
    on_cuda = train_linear_probe(x[:2400], y[:2400], x[2400:], y[2400:], 6, settings)
    assert on_cuda.weight_decay == on_cpu.weight_decay
    assert abs(on_cuda.top1 - on_cpu.top1) <= 0.01  # 6 of the 600 test rows


def test_features_on_cuda_match_cpu(cuda, monkeypatch):
    """fp32 features agree with the CPU's to float16 storage rounding (2^-11 relative) plus
    summation order; bf16 autocast (the GPU's default precision) stays close in direction."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # compare fp32 with fp32
    loaded = load_backbone("random:alexnet_small")
    images = torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8)
    layers = list(loaded.backbone.probe_layers)
    on_cpu = extract_features(loaded.backbone, images, layers, max_dims=1024, **CPU)
    on_cuda = extract_features(loaded.backbone, images, layers, max_dims=1024, **fp32_on(cuda))
    common = {**fp32_on(cuda), "amp_dtype": torch.bfloat16}
    in_bf16 = extract_features(loaded.backbone, images, layers, max_dims=1024, **common)
    for layer in layers:
        expected = on_cpu[layer].float()
        scale = expected.abs().max().item()
        torch.testing.assert_close(
            on_cuda[layer].float(), expected, rtol=2e-3, atol=1e-3 * scale, msg=layer
        )
        cosine = F.cosine_similarity(in_bf16[layer].float(), expected, dim=1)
        assert cosine.min() > 0.99, layer


def test_features_cover_every_probe_layer_with_bounded_dims(device):
    loaded = load_backbone("random:alexnet_small")
    images = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    layers = list(loaded.backbone.probe_layers)
    features = extract_features(loaded.backbone, images, layers, max_dims=1024, **fp32_on(device))
    assert list(features) == layers
    for layer, feats in features.items():
        assert feats.shape[0] == 10 and 0 < feats.shape[1] <= 1024, layer
        assert feats.dtype == torch.float16 and feats.device.type == "cpu"  # host by default
        assert torch.isfinite(feats.float()).all()


def test_features_do_not_depend_on_the_batching_and_can_stay_on_the_device(device):
    loaded = load_backbone("random:alexnet_small")
    images = torch.randint(0, 255, (10, 3, 32, 32), dtype=torch.uint8)
    whole = extract_features(
        loaded.backbone, images, ["conv2", "conv5"], max_dims=256, batch_size=10, **fp32_on(device)
    )
    batched = extract_features(
        loaded.backbone,
        images,
        ["conv2", "conv5"],
        max_dims=256,
        batch_size=4,  # 4 + 4 + 2: a short last batch
        keep_on_device=True,
        **fp32_on(device),
    )
    for layer, feats in batched.items():
        assert feats.device.type == device.type and feats.dtype == torch.float16
        # Only the summation order may differ between batch sizes (then float16 rounding).
        torch.testing.assert_close(feats.cpu().float(), whole[layer].float(), rtol=2e-3, atol=1e-3)


def test_feature_cache_is_reused_and_invalidated_by_new_weights(tmp_path, device):
    loaded = load_backbone("random:alexnet_small")
    images = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)
    kwargs = {"cache_dir": tmp_path, "data_key": "d1", "max_dims": 256, **fp32_on(device)}
    first = cached_features(loaded.backbone, images, ["conv2"], keep_on_device=True, **kwargs)
    files = list((tmp_path / "features").glob("*.pt"))
    assert len(files) == 1
    saved = torch.load(files[0])  # host float16 whatever computed it: one cache for all
    assert saved.device.type == "cpu" and saved.dtype == torch.float16
    assert torch.equal(saved, first["conv2"].cpu())
    torch.save(saved * 0 + 7, files[0])  # mark the cached copy
    again = cached_features(loaded.backbone, images, ["conv2"], keep_on_device=True, **kwargs)
    assert again["conv2"].device.type == device.type
    assert (again["conv2"] == 7).all()  # read from the cache, not recomputed
    with torch.no_grad():
        next(loaded.backbone.parameters()).add_(1.0)  # "retrained" weights
    changed = cached_features(loaded.backbone, images, ["conv2"], **kwargs)
    assert not (changed["conv2"] == 7).all()
    assert len(list((tmp_path / "features").glob("*.pt"))) == 2


def labelled(images: torch.Tensor, labels: torch.Tensor, name: str) -> LabelledImages:
    return LabelledImages(name, images, labels, int(labels.max()) + 1, key=name)


def test_linear_eval_rows_and_bad_layer(tmp_path, device):
    loaded = load_backbone("random:alexnet_small")
    images = torch.randint(0, 255, (40, 3, 32, 32), dtype=torch.uint8)
    data = labelled(images, torch.arange(40) % 4, "d")
    options = EvalOptions(device=device.type, cache_dir=None, progress=False)
    settings = ProbeSettings(weight_decays=(1e-2,), steps=5)
    result = linear_eval(
        loaded, data, data, layers=["conv1", "conv5"], settings=settings, options=options
    )
    assert [row["layer"] for row in result["layers"]] == ["conv1", "conv5"]
    assert all(0 <= row["top1"] <= row["top5"] <= 1 for row in result["layers"])
    knn = knn_eval(loaded, data, data, settings=KnnSettings(k=5), options=options)
    assert knn["layers"][0]["layer"] == "pool5" and 0 <= knn["layers"][0]["top1"] <= 1
    with pytest.raises(ValueError, match=r"unknown layer.*conv9"):
        linear_eval(loaded, data, data, layers=["conv9"], settings=settings, options=options)
    other = labelled(images, torch.arange(40) % 5, "e")
    with pytest.raises(DataFormatError, match="4 classes but e has 5"):
        linear_eval(loaded, data, other, settings=settings, options=options)


def test_zhang_pooling_gives_their_dimensions_per_alexnet_layer():
    """`--max-dims zhang`: Zhang et al.'s AlexNet probe sizes, about 9,000 values a layer
    (conv1 96x10x10, conv2 256x6x6, conv3 and conv4 384x5x5, conv5 256x6x6)."""
    from selfsup.backbones import build_backbone
    from selfsup.cli import parse_args

    dims = parse_args(
        ["eval", "linear", "run", "--data", "d", "--test", "t", "--max-dims", "zhang"]
    ).max_dims
    shapes = build_backbone("alexnet").feature_shapes(227)
    pooled = {
        layer: channels * pooled_grid(channels, side, dims) ** 2
        for layer, (channels, side, _) in shapes.items()
        if layer.startswith("conv")
    }
    assert pooled == {"conv1": 9600, "conv2": 9216, "conv3": 9600, "conv4": 9600, "conv5": 9216}
    with pytest.raises(SystemExit):
        parse_args(["eval", "linear", "run", "--data", "d", "--test", "t", "--max-dims", "wide"])


def test_report_writes_table_plot_and_json(tmp_path):
    rows = [
        {"layer": "conv1", "top1": 0.5, "top5": 0.9},
        {"layer": "conv2", "top1": 0.6, "top5": 0.95},
    ]
    results = [
        {"model": "a", "protocol": "linear", "layers": rows},
        {"model": "random:x", "protocol": "linear", "layers": rows[:1]},
    ]
    markdown = write_report(results, tmp_path)
    assert "| a | linear | 50.0 | 60.0 |" in markdown
    assert "| random:x | linear | 50.0 |  |" in table(results)
    assert (tmp_path / "accuracy.png").stat().st_size > 1000
    assert json.loads((tmp_path / "results.json").read_text()) == results


def test_cli_linear_knn_on_a_trained_run_and_random_init(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=2"), run, progress=False)
    common = [
        "--data",
        str(tiny_npz),
        "--test",
        str(tiny_npz),
        "--quiet",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    for extra in ([], ["--random-init"]):
        out = tmp_path / f"probe{len(extra)}.json"
        code = main(
            [
                "eval",
                "linear",
                str(run),
                *common,
                "--json",
                str(out),
                "--steps",
                "5",
                "--weight-decay",
                "1e-3",
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
    code = main(["eval", "knn", str(run), *common, "--json", str(tmp_path / "knn.json")])
    assert code == 0
    knn = json.loads((tmp_path / "knn.json").read_text())
    assert knn["protocol"] == "knn" and knn["layers"][0]["layer"] == "pool5"
    assert "| run | linear |" in capsys.readouterr().out


def test_finetune_and_report_with_supervised_baseline(tiny_npz, tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=2"), run, progress=False)
    common = [
        "--data",
        str(tiny_npz),
        "--test",
        str(tiny_npz),
        "--quiet",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    code = main(
        [
            "eval",
            "finetune",
            str(run),
            *common,
            "--steps",
            "3",
            "--batch-size",
            "16",
            "--json",
            str(tmp_path / "ft.json"),
        ]
    )
    assert code == 0
    finetuned = json.loads((tmp_path / "ft.json").read_text())
    assert finetuned["backbone_lr_scale"] == 0.1 and 0 <= finetuned["layers"][0]["top1"] <= 1
    code = main(
        [
            "report",
            str(run),
            *common,
            "--steps",
            "5",
            "--weight-decay",
            "1e-3",
            "--layers",
            "conv2",
            "--out",
            str(tmp_path / "report"),
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [r["model"] for r in results] == [
        "run",
        "random:alexnet_small",
        "supervised:alexnet_small",
    ]
    supervised_runs = list((tmp_path / "cache" / "runs").glob("supervised-*"))
    assert len(supervised_runs) == 1  # trained once, with the run's budget (2 steps)
    assert (
        json.loads((supervised_runs[0] / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 2
    )
    assert (tmp_path / "report" / "accuracy.png").is_file()
    # A report's results.json (a list) and an `eval --json` file (one result) combine as-is.
    code = main(
        [
            "report",
            str(tmp_path / "report" / "results.json"),
            str(tmp_path / "ft.json"),
            "--data",
            common[1],
            "--test",
            common[3],
            "--out",
            str(tmp_path / "combined"),
        ]
    )
    assert code == 0
    combined = json.loads((tmp_path / "combined" / "results.json").read_text())
    assert combined == [*results, finetuned]


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
            "--no-cache",
        ]
    )
    assert code == 2 and "needs labels" in capsys.readouterr().err


def test_eval_names_a_missing_run(tiny_npz, capsys):
    code = main(
        [
            "eval",
            "linear",
            "nonexistent_run_folder",
            "--data",
            str(tiny_npz),
            "--test",
            str(tiny_npz),
            "--no-cache",
        ]
    )
    assert code == 2 and "nonexistent_run_folder" in capsys.readouterr().err


def test_checkpoint_of_another_backbone_is_a_clear_error(tiny_npz, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(tiny_npz, "train.steps=1"), run, progress=False)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    state["config"]["backbone"]["name"] = "alexnet"  # weights are alexnet_small's
    torch.save(state, run / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        load_backbone(str(run))


def test_load_labelled_reads_real_cifar(real_data):
    data = load_labelled(str(real_data / "cifar10" / "test_1k.npz"), 32, progress=False)
    assert data.images.shape == (1000, 3, 32, 32) and data.num_classes == 10 and data.key
