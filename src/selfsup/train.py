"""The one training loop, for every pretext task.

A run folder holds `config.yaml` (the resolved config), `metrics.jsonl` (one JSON object per
logged step) and `checkpoints/last.pt`. When that checkpoint exists the run resumes from it:
same step, weights, optimizer and RNG state, and (since batches and views are functions of
(seed, step, rank)) the same data, so a killed run continues exactly as if it never stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from selfsup import checkpoint, dist, precision
from selfsup.config import ConfigError, ExperimentConfig, OptimConfig, dump
from selfsup.data import ImageStream, open_source
from selfsup.data.pairs import PairStream
from selfsup.data.streams import (
    GraphPairs,
    ImageFields,
    Images,
    Streams,
    batch_items,
    synthetic_fields,
)
from selfsup.data.trunk_input import input_of_config
from selfsup.metrics import MetricWindow, NonFiniteLossError, TensorBoardLog, check_tensorboard
from selfsup.outputs import hold_folder
from selfsup.resume import accept_changes, check_same_model, write_config
from selfsup.runs import backbone_from_config, is_timm_weights, load_backbone
from selfsup.runtime import autocast, keep_freed_memory, resolve_device, resolve_precision
from selfsup.tasks import PretextTask, build_task


def build_model(cfg: ExperimentConfig, load_init: bool = True) -> PretextTask:
    """The task with its backbone; weights from `train.init_backbone` when given (and
    `load_init`: a resumed run takes every weight from its own checkpoint instead): a selfsup
    run, checkpoint or export, or for a timm backbone a state dict of the timm model."""
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    model = build_task(cfg.task, cfg.task_config, backbone_from_config(cfg.backbone))
    init = cfg.train.init_backbone if load_init else ""
    if init and cfg.backbone.name.startswith("timm:") and is_timm_weights(init):
        try:  # weights saved from the timm model itself, not by selfsup
            model.backbone.load_timm_weights(init)
        except ValueError as err:
            raise ConfigError(f"train.init_backbone: {err}") from err
    elif init:
        source = load_backbone(init)
        if source.config.get("backbone") != dump(cfg)["backbone"]:
            raise ConfigError(
                f"train.init_backbone: {source.source} holds backbone "
                f"{source.config.get('backbone')} but this run builds {dump(cfg)['backbone']}"
            )
        model.backbone.load_state_dict(source.backbone.state_dict())
    return model


# Per-group settings that are configuration, not state: a resumed run keeps the current
# task's and device's, whatever the checkpoint says (it may predate them).
GROUP_SETTINGS = ("lr_scale", "fused", "foreach")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load saved moments and step counts but keep each group's `GROUP_SETTINGS` from the
    current optimizer (the task's `lr_scale`, the kernel choice of `build_optimizer`)."""
    settings = [
        {key: group[key] for key in GROUP_SETTINGS if key in group}
        for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(state)
    for group, kept in zip(optimizer.param_groups, settings):
        group.update(kept)


def build_optimizer(model: PretextTask, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Parameter groups by learning-rate scale (the task's `lr_scales`) and by decay: biases
    and normalisation parameters are not decayed unless `decay_norm_and_bias`, and those the
    task names in `no_weight_decay` never are. Each group keeps its `lr_scale`."""
    scales, exempt = model.lr_scales(), tuple(model.no_weight_decay())
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        scale = next((v for prefix, v in scales.items() if name.startswith(prefix)), 1.0)
        decay = (param.ndim > 1 or cfg.decay_norm_and_bias) and not name.startswith(exempt)
        groups.setdefault((scale, decay), []).append(param)
    param_groups = [
        {"params": params, "lr_scale": scale, "weight_decay": cfg.weight_decay if decay else 0.0}
        for (scale, decay), params in groups.items()
    ]
    if cfg.name == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    # On CPU torch's default SGD step is a Python loop over the parameters; its fused kernel
    # gives bit-identical weights (tests/test_fast_paths.py) 3-4x faster. (GPUs default to
    # the multi-tensor kernels already; fused AdamW is not bit-identical, so it stays off.)
    on_cpu = all(p.device.type == "cpu" for group in param_groups for p in group["params"])
    return torch.optim.SGD(
        param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, fused=on_cpu or None
    )


def peak_learning_rate(cfg: OptimConfig, global_batch: int) -> float:
    """`cfg.lr`, scaled by the global batch against `lr_reference_batch` when `lr_scaling`
    asks: linearly (Goyal et al. 2017; SimCLR with LARS) or by its square root (SimCLR's rule
    for small batches)."""
    ratio = global_batch / cfg.lr_reference_batch
    return cfg.lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[cfg.lr_scaling]


def learning_rate(
    step: int, total_steps: int, cfg: OptimConfig, peak: float | None = None
) -> float:
    """Linear warm-up to the peak (`cfg.lr` unless given), then constant, step decay (the
    peak times lr_step_factor^(step // lr_step_every)) or cosine decay to zero at
    `total_steps`."""
    peak = cfg.lr if peak is None else peak
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    if cfg.schedule == "step":
        return peak * cfg.lr_step_factor ** (step // cfg.lr_step_every)
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return peak * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def view_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The RNG for one step's views: a function of (seed, step, rank) only."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 4099 + rank)


def to_device(views: dict, device: torch.device, channels_last: bool) -> dict:
    """Move every tensor of a (possibly nested, as in multi-task) views dict to `device`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    def move(value):
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if value.dim() == 4:
            return value.to(device, non_blocking=True, memory_format=fmt)
        return value.to(device, non_blocking=True)

    return move(views)


@dataclass
class Run:
    """Everything a training loop iterates over, built from a config."""

    cfg: ExperimentConfig
    folder: Path
    device: torch.device
    model: PretextTask
    optimizer: torch.optim.Optimizer
    data: Streams  # one stream per input the task declares
    start_step: int = 0
    scaler_state: dict | None = None  # GradScaler state (fp16 autocast only)
    peak_lr: float = 0.0  # optim.lr after optim.lr_scaling for the global batch
    claim: Any = None  # the run folder's lock (outputs.hold_folder), held while training
    changes: tuple[str, ...] = ()  # settings a resume may change (train --change)

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoints" / "last.pt"


def prepare(
    cfg: ExperimentConfig,
    folder: str | Path,
    progress: bool = True,
    wait_for_folder: bool = False,
    changes: tuple[str, ...] = (),
) -> Run:
    """Process group, model, optimizer, the task's inputs; the run folder claimed (another
    process writing it is an error, or, with `wait_for_folder`, waited for); resume from its
    checkpoint. `cfg` is complete (`config.resolve`) and stays as it is."""
    folder = Path(folder)
    device = resolve_device(cfg.train.device)
    if cfg.train.heap == "reuse":
        keep_freed_memory()
    dist.init(device, cfg.train.dist_timeout)
    if cfg.train.logger == "tensorboard":
        check_tensorboard()  # before anything is built or the folder is made
    model = build_model(cfg, load_init=not (folder / "checkpoints" / "last.pt").exists())
    if cfg.data.image_size < model.min_image_size():
        raise ConfigError(
            f"data.image_size: {cfg.data.image_size} is smaller than the {cfg.task} views "
            f"need ({model.min_image_size()})"
        )
    check_trunk_inputs(cfg, model)
    model.to(
        device,
        memory_format=torch.channels_last if cfg.train.channels_last else torch.contiguous_format,
    )
    optimizer = build_optimizer(model, cfg.optim)
    data = open_inputs(cfg, model, device, progress)
    run = Run(cfg, folder, device, model, optimizer, data, changes=tuple(changes))
    run.peak_lr = peak_learning_rate(cfg.optim, cfg.data.batch_size * dist.world_size())
    if dist.is_main() and progress:
        for line in data.describe():
            print(f"data: {line}")
    report_skipped(data.skipped)
    if dist.is_main():  # the folder is made here, once the data and settings passed
        run.claim = hold_folder(folder, wait=wait_for_folder)
    try:
        resume_or_start(run)
    except BaseException:
        if run.claim is not None:  # refused (another model's checkpoint, ...): let go
            run.claim.close()
        raise
    return run


def check_trunk_inputs(cfg: ExperimentConfig, model: PretextTask) -> None:
    """Refuse, before anything trains, views whose sides the trunk cannot take (a ViT's must
    be multiples of its patch, a ConvNeXt needs 32 px): each task's views (every sub-task of
    a multi-task run) of a few random images of `data.image_size`, built once on the host
    without a forward, every side of every image view checked."""
    generator = torch.Generator().manual_seed(0)
    for name, task in model.single_tasks().items():
        fields = synthetic_fields(task.inputs(), 4, cfg.data.image_size, generator)
        for key, view in task.make_views(**fields, generator=generator).items():
            if not (view.dim() == 4 and view.shape[1] == 3 and view.is_floating_point()):
                continue  # not an image the trunk reads (labels, masks, indices)
            for side in dict.fromkeys(view.shape[-2:]):
                problem = model.backbone.input_size_problem(side)
                if problem:
                    raise ConfigError(
                        f"{name}: its `{key}` views are {side} px for data.image_size="
                        f"{cfg.data.image_size}, and {problem}; change {name}'s crop, tile or "
                        f"input size (see `selfsup config {name}`) or data.image_size"
                    )


def resume_or_start(run: Run) -> None:
    """Load the run folder's checkpoint into the run, or start the folder afresh."""
    cfg, folder = run.cfg, run.folder
    if run.checkpoint_path.exists():
        state = checkpoint.load(run.checkpoint_path)
        check_same_model(state["config"], cfg, run.checkpoint_path)
        if dist.is_main():
            accept_changes(state["config"], cfg, folder, state["step"], run.changes)
        checkpoint.load_module_state(run.model, state["model"], run.checkpoint_path)
        load_optimizer_state(run.optimizer, state["optimizer"])
        checkpoint.set_rng_states(state["rng"])
        run.start_step = state["step"]
        run.scaler_state = state.get("scaler")
        if dist.is_main():
            drop_metrics_after(folder / "metrics.jsonl", run.start_step)
            print(f"resumed from step {run.start_step} ({run.checkpoint_path})")
    elif dist.is_main():
        # A run killed before its first checkpoint starts again from step 0: its lines go.
        drop_metrics_after(folder / "metrics.jsonl", 0)
        write_config(cfg, folder)


def open_inputs(cfg: ExperimentConfig, model: PretextTask, device: torch.device, progress: bool):
    """One step-indexed stream per input the task declares (`PretextTask.inputs`), read in
    step by the loop: the one door through which training data comes in."""
    streams = []
    for wanted in model.inputs():
        if isinstance(wanted, GraphPairs):
            streams.append(open_pairs(cfg, wanted, device))
        else:
            streams.append(ImageFields(open_images(cfg, wanted, device, progress), wanted))
    return Streams(streams)


def open_images(
    cfg: ExperimentConfig, wanted: Images, device: torch.device, progress: bool
) -> ImageStream:
    """The images of `wanted.path` (data.path by default), with the labels or masks the task
    reads; refused, naming the setting, when the data has none."""
    path = wanted.path or (cfg.data.path if wanted.key == "data.path" else "")
    if not path:
        raise ConfigError(f"{wanted.key}: the {cfg.task} task needs {wanted.about}")
    source = open_source(path)
    if wanted.labels and source.labels is None:
        raise ConfigError(
            f"{wanted.key}: {path} has no labels; the {cfg.task} task needs labelled data "
            "(an ImageFolder tree or an .npz with `labels`)"
        )
    if wanted.masks and source.masks is None:
        raise ConfigError(
            f"{wanted.key}: {path} has no per-pixel masks; the {cfg.task} task needs an .npz "
            "with `images` and `masks` (e.g. the folder `selfsup video masks` wrote)"
        )
    return ImageStream(
        source,
        size=cfg.data.image_size,
        batch_size=cfg.data.batch_size,
        mode=cfg.data.cache,
        cache_max_gb=cfg.data.cache_max_gb,
        device_cache_max_gb=cfg.data.device_cache_max_gb,
        decode=cfg.data.decode,
        device=device,
        workers=cfg.data.workers,
        seed=cfg.train.seed,
        rank=dist.rank(),
        world_size=dist.world_size(),
        on_bad_image=cfg.data.on_bad_image,
        small_images=cfg.data.small_images,
        progress=progress,
        pin_memory=device.type == "cuda",
    )


def open_pairs(cfg: ExperimentConfig, wanted: GraphPairs, device: torch.device) -> PairStream:
    if not wanted.graph:
        raise ConfigError(
            f"{cfg.task}.graph: required: the patch graph from `selfsup graph build` "
            "(pass --graph GRAPH)"
        )
    return PairStream(
        wanted.patches or cfg.data.path,
        wanted.graph,
        shares=wanted.shares,
        pairs_per_batch=wanted.pairs_per_batch,
        seed=cfg.train.seed,
        rank=dist.rank(),
        world_size=dist.world_size(),
        device=device,
        device_cache_max_gb=cfg.data.device_cache_max_gb,
    )


def report_skipped(names: list[str]) -> None:
    """Count the images dropped under data.on_bad_image=skip (each once, however often met)."""
    unique = sorted(set(names))
    if unique and dist.is_main():
        print(f"skipped {len(unique)} unreadable images (data.on_bad_image=skip), e.g. {unique[0]}")


def drop_metrics_after(path: Path, step: int) -> None:
    """Forget metric lines logged after the checkpoint: the resumed run logs them again. A
    last line without its newline was torn by a kill or a full disk, and goes too."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    whole = [line for line in lines if line.endswith("\n") and line.strip()]
    kept = [line for line in whole if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        path.write_text("".join(kept))


def check_finite(run: Run, window: MetricWindow) -> None:
    """Stop at the first non-finite loss of the window, before anything logs or saves it."""
    bad = window.first_nonfinite()
    if bad is None:
        return
    step, loss = bad
    last = run.checkpoint_path if run.checkpoint_path.exists() else "none yet"
    raise NonFiniteLossError(
        f"task {run.cfg.task}: loss is {loss} at step {step}; last finite checkpoint: {last}. "
        "Try a lower optim.lr or optim.grad_clip."
    )


def save(run: Run, step: int, scaler: torch.amp.GradScaler) -> None:
    if not dist.is_main():
        return
    state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "config": dump(run.cfg),
        # What the trunk is fed (colour mode, size, mean/std): read by eval, export, embed.
        "input": input_of_config(dump(run.cfg)).to_dict(),
        "rng": checkpoint.rng_states(),
    }
    checkpoint.save_atomic(state, run.checkpoint_path)


def training_setup(run: Run) -> tuple[nn.Module, torch.amp.GradScaler, torch.dtype | None]:
    """What every step runs with: the module to call (DDP-wrapped when distributed, compiled
    with `train.compile`), the gradient scaler (active for fp16 only) and the autocast dtype.
    Puts the model in training mode."""
    cfg, model = run.cfg, run.model
    if run.device.type == "cuda":
        torch.backends.cudnn.benchmark = cfg.train.cudnn_benchmark
    amp_dtype = resolve_precision(cfg.train.precision, run.device)
    scaler = torch.amp.GradScaler(run.device.type, enabled=amp_dtype == torch.float16)
    if run.scaler_state:
        scaler.load_state_dict(run.scaler_state)
    trained: nn.Module = model
    if dist.world_size() > 1:
        # Tasks that leave some parameters out of some steps (multi-task sampling, ranks
        # assigned to tasks) say so; DDP then does not wait for their gradients.
        unused = getattr(model, "ddp_find_unused_parameters", False)
        trained = nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused)
    if cfg.train.compile != "off":
        trained = torch.compile(
            trained, mode=None if cfg.train.compile == "default" else cfg.train.compile
        )
    model.train()
    return trained, scaler, amp_dtype


def cpu_precision(run: Run, views: dict, items: int) -> precision.PrecisionChoice:
    """`train.precision=auto` on a CPU: the dtype the run began with when it resumes, else
    the faster of bf16 and fp32 for this model on these views (measured, or cached from an
    earlier run of the same workload on this CPU), decided by rank 0 for every rank and
    recorded in the run folder."""
    choice = precision.read_record(run.folder) if run.start_step > 0 else None
    if choice is None and dist.is_main():
        # What the step costs depends on the model and its inputs, not on the schedule.
        workload = {k: v for k, v in dump(run.cfg).items() if k not in ("train", "optim")}
        step = precision.training_step(run.model, views, run.device)
        with precision.untouched(run.model):
            choice = precision.measure(step, items, json.dumps(workload, sort_keys=True))
        precision.write_record(run.folder, choice)
    return dist.from_main(choice)


def step_views(run: Run, step: int, fields: dict[str, torch.Tensor]) -> dict:
    """One step's fields (from `run.data`) -> the task's views on the device, in the training
    memory format (batched tensor ops; the views are a function of (seed, step, rank))."""
    cfg = run.cfg
    generator = view_generator(cfg.train.seed, step, dist.rank())
    views = run.model.make_views(**fields, generator=generator)
    return to_device(views, run.device, cfg.train.channels_last)


def optimize(
    run: Run,
    trained: nn.Module,
    views: dict,
    step: int,
    scaler: torch.amp.GradScaler,
    amp_dtype: torch.dtype | None,
) -> dict[str, torch.Tensor]:
    """Forward, backward and optimizer step on built views; the task's outputs (loss and
    metrics). `trained` is the module from `training_setup`."""
    cfg = run.cfg
    lr = learning_rate(step, cfg.train.steps, cfg.optim, run.peak_lr)
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    if cfg.train.compile == "reduce-overhead":
        # CUDA graphs replay into the same output memory: say where one step ends, so the
        # previous step's outputs (already summed into the metric window) may be reused.
        torch.compiler.cudagraph_mark_step_begin()
    with autocast(run.device, amp_dtype):
        out = trained(views)
    # No finiteness check here: reading the loss would wait for the GPU every step. The loop
    # checks the metric window (first non-finite step) before it logs or saves anything.
    loss = out["loss"]
    if not loss.requires_grad:  # else backward's "element 0 of tensors does not require grad"
        hint = f" (under train.compile={cfg.train.compile}; train.compile=off avoids it)"
        raise RuntimeError(
            f"task {cfg.task}: the loss carries no gradient at step {step}"
            + (hint if cfg.train.compile != "off" else "")
        )
    run.optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    out = {**out, **run.model.backward_metrics()}  # e.g. multi-task trunk gradient norms
    if cfg.optim.grad_clip > 0:
        scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
    scaler.step(run.optimizer)
    scaler.update()
    return out


def log_record(run: Run, window: MetricWindow, done: int, images: int, started: float) -> dict:
    """The metrics.jsonl line after `done` steps: the window's means (the one read of the
    device per window, after the finiteness check) and its images/s since `started`."""
    check_finite(run, window)
    means = window.read()  # waits for the window's last step: time it after
    return {
        "step": done,
        "epoch": round(done / run.data.steps_per_epoch, 4),
        "lr": learning_rate(done - 1, run.cfg.train.steps, run.cfg.optim, run.peak_lr),
        **means,
        "images_per_sec": round(images / (time.perf_counter() - started), 2),
        # The allocator's own counter, read on the host: no wait for the GPU.
        **(
            {"max_memory_gib": round(torch.cuda.max_memory_allocated(run.device) / 2**30, 3)}
            if run.device.type == "cuda"
            else {}
        ),
    }


def train(
    cfg: ExperimentConfig,
    folder: str | Path,
    progress: bool = True,
    wait_for_folder: bool = False,
    changes: tuple[str, ...] = (),
) -> Run:
    """Train `cfg.task` until step `cfg.train.steps`, resuming from `folder` when possible;
    `wait_for_folder`: wait while another process trains into `folder` (then resume or find
    it done) instead of refusing; `changes`: settings a resume may change from the run's
    (selfsup.resume)."""
    run = prepare(cfg, folder, progress, wait_for_folder, changes)
    try:
        return train_prepared(run, progress)
    finally:
        if run.claim is not None:
            run.claim.close()


def train_prepared(run: Run, progress: bool) -> Run:
    cfg = run.cfg
    total = cfg.train.steps
    trained, scaler, amp_dtype = training_setup(run)
    log = (run.folder / "metrics.jsonl").open("a") if dist.is_main() else None
    bar = tqdm(
        total=total,
        initial=run.start_step,
        desc=f"train {cfg.task}",
        unit="step",
        disable=not (progress and dist.is_main()),
        dynamic_ncols=True,
    )
    window = MetricWindow()
    window_start, window_images = time.perf_counter(), 0
    with contextlib.ExitStack() as stack:
        board = None  # train.logger=tensorboard: the same records, and the views as images
        if cfg.train.logger == "tensorboard" and dist.is_main():
            board = stack.enter_context(
                contextlib.closing(TensorBoardLog(run.folder, run.start_step))
            )
        # Closed on the way out, also when a step raises: that stops the prefetch thread
        # and the DataLoader workers at once.
        batches = iter(())
        if run.start_step < total:
            batches = stack.enter_context(contextlib.closing(run.data.batches(run.start_step)))
        measure_precision = cfg.train.precision == "auto" and run.device.type == "cpu"
        for step, fields in batches:
            views = step_views(run, step, fields)
            if measure_precision:  # on the first step's own views, before it trains
                choice = cpu_precision(run, views, batch_items(fields))
                amp_dtype = choice.dtype
                if progress and dist.is_main():
                    bar.write(choice.describe())
                measure_precision = False
            out = optimize(run, trained, views, step, scaler, amp_dtype)
            # --- log and checkpoint ----------------------------------------------------------
            window.add(out, step)
            window_images += batch_items(fields) * dist.world_size()
            done = step + 1
            # `>=`: in stream mode a step whose images were all skipped as bad is never
            # yielded, so the step count can jump past `total`.
            if done % cfg.train.log_every == 0 or done >= total:
                record = log_record(run, window, done, window_images, window_start)
                if log:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if board:
                    board.scalars(record)
                bar.set_postfix(
                    loss=f"{record['loss']:.4g}", img_s=f"{record['images_per_sec']:.0f}"
                )
                window_start, window_images = time.perf_counter(), 0
            every = cfg.train.image_every
            if board and every and (done == 1 or done % every == 0):
                board.images(done, run.model.view_grids(views))
            if done % cfg.checkpoint.every == 0 or done >= total:
                check_finite(run, window)  # never save weights a non-finite loss has touched
                save(run, done, scaler)
            bar.update(1)
            if done >= total:
                break
    bar.close()
    if log:
        log.close()
    if run.data.streamed:  # streamed images are only met (and skipped) while training
        report_skipped(run.data.skipped)
    if run.start_step >= total and dist.is_main():
        print(f"already trained to step {run.start_step} (train.steps={total}); nothing to do")
    dist.barrier()
    return run
