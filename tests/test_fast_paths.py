"""Fast paths of the training loop give what the plain paths gave: the epoch permutation
drawn once per epoch, the fused SGD step on CPU and the reused heap (bench/perf.py found them)
exactly; train.compile and the planar layout of small-map convs up to float reassociation."""

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from selfsup.backbones import build_backbone
from selfsup.backbones import conv as layout
from selfsup.backbones.conv import LayoutConv2d, planar_is_faster
from selfsup.data import open_source
from selfsup.data.loader import ImageStream
from selfsup.runtime import _glibc_mallopt
from selfsup.train import build_model, build_optimizer, load_optimizer_state
from tests.helpers import SMALL_RESNET, one_torch_thread, tiny_config  # noqa: F401
from tests.test_train import train_command


def plain_rows(stream: ImageStream, step: int) -> torch.Tensor:
    """The batch rows as the loader drew them before: a fresh permutation every step."""
    epoch, position = divmod(step, stream.steps_per_epoch)
    generator = torch.Generator().manual_seed(stream.seed * 1_000_003 + epoch)
    order = torch.randperm(stream.num_images, generator=generator)
    start = (position * stream.world_size + stream.rank) * stream.batch_size
    return order[start : start + stream.batch_size]


def test_cached_epoch_order_gives_the_plain_batches(tiny_npz):
    stream = ImageStream(
        open_source(tiny_npz), size=32, batch_size=8, seed=3, rank=1, world_size=2, workers=0,
        progress=False,
    )  # fmt: skip
    per_epoch = stream.steps_per_epoch
    # Across epoch boundaries, and back to an earlier epoch as a resumed run does.
    steps = [*range(3 * per_epoch + 2), 1, per_epoch + 1, 0, 5 * per_epoch]
    for step in steps:
        assert torch.equal(stream.order.rows(step), plain_rows(stream, step)), step
    batches = stream.batches(per_epoch - 1)
    for _ in range(3):
        step, images, _, _ = next(batches)
        assert torch.equal(images, stream.decoded.images[plain_rows(stream, step)])


def plain_sgd(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same parameter groups with torch's per-parameter loop (its CPU default)."""
    groups = [{**group, "fused": None, "foreach": False} for group in optimizer.param_groups]
    return type(optimizer)(groups)


def test_fused_sgd_on_cpu_is_bit_identical_to_the_loop(tiny_npz):
    cfg = tiny_config(tiny_npz, *SMALL_RESNET, "optim.weight_decay=0.001")
    fast_model = build_model(cfg)
    plain_model = copy.deepcopy(fast_model)
    fast = build_optimizer(fast_model, cfg.optim)
    plain = plain_sgd(build_optimizer(plain_model, cfg.optim))
    assert all(group["fused"] for group in fast.param_groups)
    assert len({group["weight_decay"] for group in fast.param_groups}) == 2  # decay and not
    generator = torch.Generator().manual_seed(0)
    for step in range(5):
        for group_fast, group_plain in zip(fast.param_groups, plain.param_groups):
            group_fast["lr"] = group_plain["lr"] = 0.05 * (step + 1) * group_fast["lr_scale"]
        for p_fast, p_plain in zip(fast_model.parameters(), plain_model.parameters()):
            p_fast.grad = torch.randn(p_fast.shape, generator=generator)
            p_plain.grad = p_fast.grad.clone()
        fast.step()
        plain.step()
    for (name, p_fast), p_plain in zip(fast_model.named_parameters(), plain_model.parameters()):
        assert torch.equal(p_fast, p_plain), name
        assert torch.equal(
            fast.state[p_fast]["momentum_buffer"], plain.state[p_plain]["momentum_buffer"]
        )


def test_resume_keeps_the_current_kernel_choice(tiny_npz):
    """A checkpoint written before the fused step (fused unset) resumes with the fused step."""
    cfg = tiny_config(tiny_npz)
    model = build_model(cfg)
    old = plain_sgd(build_optimizer(model, cfg.optim))
    optimizer = build_optimizer(model, cfg.optim)
    load_optimizer_state(optimizer, old.state_dict())
    assert all(group["fused"] and not group["foreach"] for group in optimizer.param_groups)


def two_steps(cfg, folder) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Losses of two loop steps and the parameters after them."""
    from selfsup import train as loop

    run = loop.prepare(cfg, folder, progress=False)
    trained, scaler, amp_dtype = loop.training_setup(run)
    batches = run.data.batches(0)
    losses = []
    for _ in range(2):
        step, fields = next(batches)
        views = loop.step_views(run, step, fields)
        out = loop.optimize(run, trained, views, step, scaler, amp_dtype)
        losses.append(float(out["loss"].detach()))
    return losses, {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def multitask_one_task(data, *extra):
    """One multi-task sub-task of weight 1, no lasso: its loss is the total, a case that
    torch.compile got wrong (see MultiTask.forward)."""
    from tests.test_multitask import multitask_config

    return multitask_config(
        data, "multitask.tasks=[relative-position]", "multitask.lasso=false", *extra
    )


@pytest.mark.parametrize(
    "make_config", [tiny_config, multitask_one_task], ids=["counting", "multitask"]
)
def test_compiled_steps_give_the_eager_steps(tiny_npz, tmp_path, make_config):
    """train.compile=true trains the same model: same losses and weights, up to the float
    reassociation of fused kernels."""
    eager_cfg = make_config(tiny_npz, "train.precision=fp32")
    compiled_cfg = make_config(tiny_npz, "train.precision=fp32", "train.compile=true")
    eager_losses, eager_weights = two_steps(eager_cfg, tmp_path / "eager")
    try:
        compiled_losses, compiled_weights = two_steps(compiled_cfg, tmp_path / "compiled")
    except UnboundLocalError as err:  # raised inside inductor's generated code
        if torch.__version__ >= "2.12":
            raise
        pytest.xfail(f"torch {torch.__version__}'s inductor CPU code for this graph fails: {err}")
    finally:
        torch._dynamo.reset()
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4, abs=1e-6)
    for name, value in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], value, rtol=1e-4, atol=1e-5, msg=name)


needs_glibc = pytest.mark.skipif(
    _glibc_mallopt() is None, reason="train.heap=reuse tunes glibc's malloc (Linux) only"
)

# Allocates and frees a 64 MB tensor (over glibc's largest mmap threshold) and prints the
# fewest minor page faults of three windows of five rounds, after ten rounds of warm-up: each
# fresh mapping faults in 16,384 pages. (The reused heap settles after a few rounds:
# posix_memalign's padding keeps the first freed blocks just too small for the next request;
# how many rounds that takes varies from run to run, seen once past the warm-up, hence the
# fewest of several windows.)
LARGE_TENSOR_FAULTS = """
import resource, sys, torch
from selfsup.runtime import keep_freed_memory
if sys.argv[1] == "reuse":
    assert keep_freed_memory()
for _ in range(10):
    torch.ones(16 << 20)
windows = []
for _ in range(3):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(16 << 20)
    windows.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(windows))
"""


@needs_glibc
def test_reused_heap_stops_the_page_faults_of_large_tensors():
    faults = {}
    for heap in ("system", "reuse"):  # in processes of their own: the setting is per process
        done = subprocess.run(
            [sys.executable, "-c", LARGE_TENSOR_FAULTS, heap],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        faults[heap] = int(done.stdout)
    assert faults["system"] > 5 * 16_384 // 2, faults  # every tensor mapped afresh
    assert faults["reuse"] < 1_000, faults  # served from the heap again


@needs_glibc
def test_reused_heap_trains_bitwise_as_the_system_heap(tiny_npz, tmp_path):
    """The heap setting changes where memory comes from, never what is computed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    states = {}
    for heap in ("system", "reuse"):
        out = tmp_path / heap
        command = [*train_command(tiny_npz, out, steps=4), f"train.heap={heap}"]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        states[heap] = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    for name, value in states["system"]["model"].items():
        assert torch.equal(states["reuse"]["model"][name], value), name


class ConvLayouts(TorchDispatchMode):
    """Records whether each convolution ran on a channels_last or a planar input."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            planar = args[0].is_contiguous() and args[0].shape[-1] * args[0].shape[-2] > 1
            self.seen.append("planar" if planar else "channels_last")
        return func(*args, **(kwargs or {}))


def channels_last_input(channels: int, side: int) -> torch.Tensor:
    x = torch.randn(3, channels, side, side).contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


def test_layout_conv_gives_the_channels_last_conv_in_planar_layout():
    torch.manual_seed(0)
    fast = LayoutConv2d(256, 192, 3, padding=1, bias=True)
    plain = nn.Conv2d(256, 192, 3, padding=1, bias=True)
    plain.load_state_dict(fast.state_dict())
    for net in (fast, plain):
        net.to(memory_format=torch.channels_last)
    x = channels_last_input(256, 4)
    x_plain = x.detach().clone().requires_grad_()
    with ConvLayouts() as layouts:
        out = fast(x)
    assert layouts.seen == ["planar"]
    assert out.is_contiguous(memory_format=torch.channels_last)  # the network keeps its layout
    expected = plain(x_plain)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x.grad, x_plain.grad, rtol=1e-4, atol=1e-4)
    for (name, p), q in zip(fast.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-3, msg=name)


@pytest.mark.parametrize(
    "channels, side, kernel, stride, planar",
    [
        (192, 4, 3, 1, True),  # the smallest map-and-width the rule takes
        (512, 2, 3, 1, True),
        (128, 4, 3, 1, False),  # narrower: channels_last is as fast
        (256, 6, 3, 1, False),  # larger map
        (256, 4, 1, 1, False),  # 1x1 kernel
        (256, 4, 3, 2, False),  # strided
    ],
)
def test_planar_rule_takes_only_wide_3x3_convs_on_tiny_maps(channels, side, kernel, stride, planar):
    conv = LayoutConv2d(channels, 8, kernel, stride, kernel // 2)
    x = channels_last_input(channels, side)
    assert planar_is_faster(x, conv) is planar
    assert not planar_is_faster(x.contiguous(), conv)  # a planar input stays as it is
    assert not planar_is_faster(x.double(), conv)  # only fp32 was measured
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not planar_is_faster(x, conv)


def test_resnet_last_stage_runs_planar_with_the_plain_result(monkeypatch):
    torch.manual_seed(0)
    net = build_backbone("resnet18", stem="small", width=0.5).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with ConvLayouts() as layouts:
        fast = net(x)
    # Stage 4 has 256 channels on 4x4 maps: its three stride-1 3x3 convs run planar.
    assert layouts.seen.count("planar") == 3, layouts.seen
    monkeypatch.setattr(layout, "planar_is_faster", lambda x, conv: False)
    torch.testing.assert_close(fast, net(x), rtol=1e-4, atol=1e-4)


class PreActConv(nn.Module):
    """BN-ReLU-conv in a forward of its own (dynamo does not compile torch.nn's frames)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.conv = LayoutConv2d(channels, 8, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.relu(self.norm(x)))


@pytest.mark.parametrize("channels, planar", [(192, True), (128, False)])
def test_compile_leaves_the_planar_conv_to_eager(channels, planar):
    """Inductor would hand the conv channels_last operands again, so a planar call stays out
    of the compiled graph; a channels_last one is compiled as usual."""
    torch.manual_seed(0)
    net = PreActConv(channels).to(memory_format=torch.channels_last)
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    x = channels_last_input(channels, 4).detach()
    out = torch.compile(net, backend=record)(x)
    traced = [str(node.target) for g in graphs for node in g.graph.nodes]
    assert any("batch_norm" in t for t in traced)
    assert any("conv2d" in t for t in traced) is not planar
    torch.testing.assert_close(out, net(x))
