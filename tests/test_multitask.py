"""Multi-task training: lasso layer combination, harmonization, motion data, ranks."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from selfsup.backbones import build_backbone
from selfsup.backbones.lasso import LassoAlpha, LassoTrunk
from selfsup.checkpoint import load as load_checkpoint
from selfsup.cli import main
from selfsup.config import ConfigError, load_yaml, merge, parse_overrides, resolve
from selfsup.data import decode_all, open_source
from selfsup.data import views as V
from selfsup.data.trunk_input import lightness_channels
from selfsup.demo import sample_path
from selfsup.features import extract_features
from selfsup.presets import config_file
from selfsup.runs import load_backbone
from selfsup.tasks import MEAN, STD, build_task, task_config_class
from selfsup.tasks.colorization import lightness_input
from selfsup.tasks.multitask import ranks_per_task, tasks_of_rank, uses_lasso
from selfsup.tasks.relative_position import sample_patch_pair
from selfsup.train import build_model, build_optimizer, train
from tests.test_ddp import free_port

RESNET = [
    "backbone.name=resnet18",
    "backbone.stem=small",
    "backbone.width=0.125",
    "backbone.num_stages=2",
    "data.batch_size=8",
    "data.workers=0",
    "train.log_every=1",
    "optim.warmup_steps=0",
]
CHEAP = "multitask.tasks=[rotation,exemplar]"


def multitask_config(data, *extra):
    return resolve(
        parse_overrides(["task=multitask", f"data.path={data}", *RESNET, CHEAP, *extra]),
        task_config_class,
    )


def test_tasks_are_dealt_to_ranks():
    assert tasks_of_rank(4, 0, 1) == [0, 1, 2, 3]
    assert [tasks_of_rank(4, r, 2) for r in range(2)] == [[0, 2], [1, 3]]
    assert [tasks_of_rank(4, r, 8) for r in range(8)] == [[0], [1], [2], [3]] * 2
    assert ranks_per_task(4, 8) == [2, 2, 2, 2] and ranks_per_task(3, 2) == [1, 1, 1]


def test_lasso_trunk_is_the_weighted_sum_of_units():
    trunk = build_backbone("resnet18", stem="small", width=0.125, num_stages=2).eval()
    alphas = LassoAlpha(2, 2)
    with torch.no_grad():
        alphas.alpha.copy_(torch.tensor([[0.3, -1.2], [1.0, 0.0]]))
    view = LassoTrunk(trunk, alphas, 0, stage=2).eval()
    x = torch.randn(2, 3, 16, 16)
    units = trunk.forward_layers(x, list(trunk.unit_names(2)))
    expected = view.norm(0.3 * units["layer2.0"] - 1.2 * units["layer2.1"])
    torch.testing.assert_close(view(x), expected)
    layers = view.forward_layers(x, ["stem", "final"])
    torch.testing.assert_close(layers["final"], expected)
    torch.testing.assert_close(layers["stem"], trunk.forward_layers(x, ["stem"])["stem"])


def test_lasso_auto_is_on_with_a_resnet_and_off_with_an_alexnet():
    resnet = build_backbone("resnet18", stem="small", width=0.125, num_stages=2)
    alexnet = build_backbone("alexnet_small")
    assert uses_lasso("auto", resnet) and not uses_lasso("auto", alexnet)
    assert uses_lasso("on", resnet) and not uses_lasso("off", resnet)
    with pytest.raises(ConfigError, match=r"multitask\.lasso: the lasso combines residual units"):
        uses_lasso("on", alexnet)
    # Configs written when the key was a bool (the multitask_small preset) read the same.
    assert multitask_config("x.npz", "multitask.lasso=true").task_config.lasso == "on"
    assert multitask_config("x.npz", "multitask.lasso=false").task_config.lasso == "off"


def alpha_after(tiny_npz, tmp_path, penalty: float) -> torch.Tensor:
    # fp32 whatever the machine: `auto` picks bf16 on a CPU where it times faster (or under
    # load), and 12 bf16 steps leave every alpha just above the sparsity threshold.
    cfg = multitask_config(
        tiny_npz, f"multitask.lasso_penalty={penalty}", "train.steps=12", "optim.lr=0.05",
        "train.precision=fp32",
    )  # fmt: skip
    run = train(cfg, tmp_path / f"lasso{penalty}", progress=False)
    return run.model.alphas.alpha.detach().abs()


def test_a_stronger_lasso_penalty_makes_alpha_sparser(tiny_npz, tmp_path):
    weak, strong = alpha_after(tiny_npz, tmp_path, 0.0), alpha_after(tiny_npz, tmp_path, 2.0)
    assert strong.sum() < 0.5 * weak.sum()
    assert (strong < 0.05).float().mean() > (weak < 0.05).float().mean()


def test_harmonized_run_trains_and_evaluates_on_lightness(tiny_npz, tmp_path):
    cfg = multitask_config(tiny_npz, "multitask.harmonize=true", "train.steps=2")
    run = train(cfg, tmp_path / "harmonized", progress=False)
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    seen = run.model.harmonized(images, run.model.subtasks["rotation"])
    torch.testing.assert_close(seen, lightness_channels(V.rgb_to_lab(V.to_float(images))))
    loaded = load_backbone(str(tmp_path / "harmonized"))
    assert loaded.input.colour == "lightness"  # the record the checkpoint carries
    state = load_checkpoint(tmp_path / "harmonized" / "checkpoints" / "last.pt")
    assert state["input"]["colour"] == "lightness"
    features = extract_features(loaded.backbone, images, ["final"], trunk_input=loaded.input,
                                device=torch.device("cpu"), amp_dtype=None, max_dims=0,
                                progress=False)["final"]  # fmt: skip
    with torch.no_grad():  # the same images through colorization's own input
        x = lightness_input(V.rgb_to_lab(V.to_float(images)))
        fmap = loaded.backbone.eval().forward_layers(x, ["final"])["final"]
    expected = fmap.mean(dim=(2, 3))
    torch.testing.assert_close(features.float(), expected, atol=1e-2, rtol=1e-2)


def harmonized_inputs(harmonize: bool, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The trunk input each of the paper's four tasks builds from `images` (also the motion
    frames) in one multi-task step."""
    values = {"task": "multitask", "multitask": {"harmonize": harmonize, "lasso": "off"}}
    trunk = build_backbone("resnet18", stem="small", width=0.125, num_stages=2)
    task = build_task("multitask", resolve(values, task_config_class).task_config, trunk)
    masks = torch.zeros(images.shape[0], *images.shape[-2:], dtype=torch.uint8)
    views = task.make_views(images, torch.Generator().manual_seed(0), motion_images=images,
                            motion_masks=masks)  # fmt: skip
    return {
        "relative-position": views["relative-position"]["patches"],
        "colorization": views["colorization"]["lightness"],
        "exemplar": views["exemplar"]["views"],
        "motion-segmentation": views["motion-segmentation"]["images"],
    }


def test_harmonized_tasks_all_see_colorizations_input():
    """Paper: "to harmonize, we replace relative position's preprocessing with the same
    preprocessing used for colorization". One input for every harmonized task: per image,
    the three channels carry the same lightness (no colour, no dropped channels of noise),
    and the per-channel statistics over real images are colorization's."""
    images = decode_all(open_source(str(sample_path("train"))), 32, workers=0,
                        progress=False).images[:256]  # fmt: skip
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)

    def statistics(x):
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))

    inputs = harmonized_inputs(True, images)
    ref_mean, ref_std = statistics(inputs["colorization"])
    for name, x in inputs.items():
        lightness = x * std + mean  # back to [0, 1]
        torch.testing.assert_close(lightness[:, 1:], lightness[:, :1].expand(-1, 2, -1, -1),
                                   atol=1e-5, rtol=0, msg=name)  # fmt: skip
        x_mean, x_std = statistics(x)
        assert (x_mean - ref_mean).abs().max() < 0.1, (name, x_mean, ref_mean)
        assert ((x_std / ref_std) - 1).abs().max() < 0.12, (name, x_std, ref_std)
    # Without harmonization relative position drops colour: one channel, two of noise.
    patches = harmonized_inputs(False, images)["relative-position"]
    per_image_std = patches.flatten(2).std(dim=2).sort(dim=1).values  # (N, 3), ascending
    assert (per_image_std[:, 1] < 0.05 * per_image_std[:, 2]).all()


def test_harmonized_relative_position_patches_are_colorizations_input_exactly():
    """The same crops through colorization's preprocessing give the same numbers."""
    values = {"task": "multitask", "multitask": {"tasks": ["relative-position", "colorization"],
              "harmonize": True, "lasso": "off"}}  # fmt: skip
    config = resolve(values, task_config_class).task_config
    rp_config = config.settings["relative-position"]
    assert not rp_config.color_drop and not rp_config.standardize_patches  # settled by resolve
    task = build_task("multitask", config, build_backbone("resnet18", stem="small", width=0.125))
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    rp = task.subtasks["relative-position"]
    patches = rp.make_views(task.harmonized(images, rp), torch.Generator().manual_seed(3))
    centre, neighbour, _ = sample_patch_pair(images, rp_config, torch.Generator().manual_seed(3))
    crops = V.to_float(torch.cat([centre, neighbour]))
    torch.testing.assert_close(patches["patches"], lightness_input(V.rgb_to_lab(crops)))


def test_harmonize_settles_relative_positions_guards_and_refuses_contrary_settings():
    base = ["task=multitask", "multitask.harmonize=true"]
    cfg = resolve(parse_overrides(base), task_config_class)
    assert cfg.task_config.settings["relative-position"].color_drop is False
    with pytest.raises(ConfigError, match=r"relative-position\.color_drop: multitask\.harmonize"):
        resolve(parse_overrides([*base, "multitask.settings.relative-position.color_drop=true"]),
                task_config_class)  # fmt: skip
    plain = resolve(parse_overrides(["task=multitask"]), task_config_class)
    assert plain.task_config.settings["relative-position"].color_drop is True


def test_alpha_takes_no_weight_decay(tiny_npz):
    """alpha's penalty is the lasso's L1; the optimizer adds no L2 to it (it does to convs)."""
    cfg = multitask_config(tiny_npz, "optim.weight_decay=0.1", "optim.decay_norm_and_bias=true")
    model = build_model(cfg)
    optimizer = build_optimizer(model, cfg.optim)
    decay = {
        id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]
    }
    assert decay[id(model.alphas.alpha)] == 0.0
    assert decay[id(model.backbone.stages["stem"].weight)] == 0.1
    # One SGD step on a zero gradient leaves alpha where it was (an L2 would shrink it).
    before = model.alphas.alpha.detach().clone()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    torch.testing.assert_close(model.alphas.alpha.detach(), before, rtol=0, atol=0)


def test_multitask_command_with_motion_masks(tiny_npz, tmp_path):
    rng = np.random.default_rng(0)
    masks = np.zeros((12, 24, 24), np.uint8)  # at least one batch (8) of frames
    masks[:, 6:18, 4:14] = 255
    np.savez(tmp_path / "motion.npz", images=rng.integers(0, 256, (12, 24, 24, 3), np.uint8),
             masks=masks)  # fmt: skip
    out = tmp_path / "mt"
    args = ["train", "multitask", "--data", str(tiny_npz), "--out", str(out), "--steps", "2",
            "--quiet", "--tasks", "rotation,motion-segmentation", "--videos",
            str(tmp_path / "motion.npz"), *RESNET]  # fmt: skip
    assert main(args) == 0
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"rotation/loss", "motion-segmentation/loss", "lasso_l1"} <= set(record)
    assert np.isfinite(record["loss"])


def test_multitask_config_errors_name_the_key(tiny_npz, tmp_path, capsys):
    base = ["train", "multitask", "--data", str(tiny_npz), "--out", str(tmp_path / "x"), *RESNET]
    assert main([*base, "--tasks", "rotation,nope"]) == 2
    assert "multitask.tasks: ['nope']" in capsys.readouterr().err
    assert main([*base, "--tasks", "rotation,motion-segmentation"]) == 2
    assert "multitask.videos" in capsys.readouterr().err
    # An AlexNet has no residual units: asked for, the lasso is refused (`auto` turns it off).
    assert (
        main([*base, "--tasks", "rotation", "backbone.name=alexnet_small", "multitask.lasso=on"])
        == 2
    )
    assert "multitask.lasso" in capsys.readouterr().err


WORKER = textwrap.dedent("""
    import sys
    import torch
    from selfsup import dist
    from selfsup.config import parse_overrides, resolve
    from selfsup.tasks import task_config_class
    from selfsup.train import train, view_generator

    data, out, *overrides = sys.argv[1:]
    cfg = resolve(parse_overrides([f"data.path={data}", *overrides]), task_config_class)
    run = train(cfg, out, progress=False)
    state = {k: v.detach().clone() for k, v in run.model.named_parameters()}
    active = run.model.active_tasks(view_generator(0, 0, dist.rank()))
    torch.save({"state": state, "active": active}, f"{out}/rank{dist.rank()}.pt")
    dist.shutdown()
""")


@pytest.mark.timeout(300)
def test_ranks_run_their_own_tasks_and_share_the_trunk(tiny_npz, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={free_port()}", str(script), str(tiny_npz), str(out),
               "task=multitask", *RESNET, CHEAP, "multitask.split_by_rank=true",
               "train.steps=3", "optim.lr=0.05"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["active"] == [0] and ranks[1]["active"] == [1]
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # DDP kept every parameter in step
    torch.manual_seed(0)
    cfg = multitask_config(tiny_npz, "multitask.split_by_rank=true")
    initial = dict(build_model(cfg).named_parameters())
    for task in ("rotation", "exemplar"):  # each head trained on one rank only, still moved
        head = [k for k in a if k.startswith(f"subtasks.{task}.") and ".backbone." not in k]
        assert any(not torch.equal(a[k], initial[k]) for k in head), task


@pytest.mark.timeout(300)
def test_paper_scale_preset_takes_a_step_on_cpu(tmp_path):
    """multitask_resnet101: ResNet-101 v2 cut after block 3 (23 units, 1024 channels), the
    four paper tasks at the paper's sizes, a lasso over block 3; one step, a batch of 2."""
    rng = np.random.default_rng(0)
    size = 400  # the preset's data.image_size: relative position's 398 px grid
    np.savez(tmp_path / "images.npz", images=rng.integers(0, 256, (4, size, size, 3), np.uint8))
    masks = np.zeros((2, size, size), np.uint8)
    masks[:, 100:300, 120:260] = 1
    frames = rng.integers(0, 256, (2, size, size, 3), np.uint8)
    np.savez(tmp_path / "motion.npz", images=frames, masks=masks)
    values = load_yaml(config_file("multitask_resnet101"))
    overrides = parse_overrides([f"data.path={tmp_path / 'images.npz'}", "data.batch_size=2",
                                 "data.workers=0", "train.steps=1", "train.device=cpu",
                                 # told, not measured: auto would time two more steps
                                 "train.precision=fp32", "optim.warmup_steps=0",
                                 f"multitask.videos={tmp_path / 'motion.npz'}"])  # fmt: skip
    cfg = resolve(merge(values, overrides), task_config_class)
    rp = cfg.task_config.settings["relative-position"]
    assert (rp.patch_size, rp.gap, rp.jitter, cfg.data.image_size) == (96, 48, 7, 400)
    assert cfg.task_config.settings["colorization"].input_size == 224
    run = train(cfg, tmp_path / "run", progress=False)
    trunk = run.model.backbone
    assert len(trunk.unit_names(3)) == 23 and trunk.num_features == 1024
    assert trunk.num_stages == 3 and run.model.alphas.alpha.shape == (4, 23)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["loss"]) and record["step"] == 1
    for task in cfg.task_config.tasks:
        assert np.isfinite(record[f"{task}/loss"]) and record[f"{task}/trunk_grad_norm"] > 0
