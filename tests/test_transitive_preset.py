"""The paper-scale transitive preset (`transitive_vgg16`) takes a training step on a CPU: the
full VGG16 on the paper's 227 px crops, with a batch of 2 pairs."""

import numpy as np
import torch

from selfsup.config import load_yaml, merge, parse_overrides, resolve
from selfsup.presets import config_file
from selfsup.tasks import task_config_class
from selfsup.train import optimize, prepare, step_views, training_setup
from tests.test_streams import write_graph


def test_the_paper_scale_preset_steps_on_a_cpu(tmp_path):
    # An intra pair (two patches of track 0) and an inter pair (tracks 1 and 2): the default
    # shares give a batch of 2 pairs one of each, and every anchor two negatives.
    patches, graph = write_graph(tmp_path / "graph", np.array([[0, 1], [4, 8]]), np.array([1, 0]))
    values = merge(
        load_yaml(config_file("transitive_vgg16")),
        parse_overrides(
            [f"transitive.graph={graph}", f"data.path={patches}", "transitive.pairs_per_batch=2"]
        ),
    )
    cfg = resolve(values, task_config_class)
    assert (cfg.backbone.name, cfg.backbone.width, cfg.task_config.crop_size) == ("vgg16", 1.0, 227)
    run = prepare(cfg, tmp_path / "run", progress=False)
    try:
        head = run.model.head[1]
        assert head.in_features == 4096  # the embedding reads fc7
        trained, scaler, amp_dtype = training_setup(run)
        step, fields = next(run.data.batches(0))
        views = step_views(run, step, fields)
        assert views["crops"].shape == (4, 3, 227, 227)
        before = head.weight.detach().clone()
        out = optimize(run, trained, views, step, scaler, amp_dtype)
        assert torch.isfinite(out["loss"]) and out["loss"] > 0
        assert not torch.equal(before, head.weight)  # the step moved the weights
        shares = [float(out[f"share_{kind}"]) for kind in ("inter", "intra", "transitive")]
        assert shares == [0.5, 0.5, 0.0]
    finally:
        if run.claim is not None:
            run.claim.close()
