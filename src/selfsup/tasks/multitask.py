"""Multi-task self-supervision (Doersch & Zisserman, ICCV 2017).

Several pretext tasks train one shared trunk, each with its own head, and the loss is the
weighted sum of theirs:

    L = sum_t w_t L_t + lambda |alpha|_1          (the second term only with the lasso)

- **Lasso** (`lasso`): each head reads a learned combination of the residual units of one
  trunk stage instead of the last unit (see `backbones/lasso.py`); alpha (tasks x units) is
  L1-penalised so each task picks few depths, and takes no weight decay (its penalty is the
  L1). `selfsup inspect` draws it. Only ResNets have residual units: by default (`auto`) the
  lasso is on with a ResNet trunk, off with AlexNet.
- **Harmonization** (`harmonize`): every task sees colorization's input, the CIE lightness
  L* / 100 replicated over the three channels (the paper replaces relative position's
  preprocessing with colorization's; here exemplar, motion segmentation and any other task
  get it too, so the trunk has one input). Relative position then drops no colour
  (`RelativePositionConfig.harmonized`, settled by `config.resolve`); colorization still gets
  the colour images its targets need. The run's input record says `lightness`, so
  evaluation and export feed the same.
- **Loss scales**: each task's loss (`<task>/loss`) and the norm of the gradient it sends into
  the trunk (`<task>/trunk_grad_norm`, see `backbones/trunk_gradients.py`) are logged;
  `trunk_grad_norm` > 0 rescales every task's trunk gradient to that norm.
- **Sampling**: `all` runs every task every step; `random` draws one task per step (with
  probability proportional to its weight), a cheaper step.
- **Distributed** (`split_by_rank`): under torchrun each rank runs a subset of the tasks, as
  the paper's workers did, while DDP averages all gradients, so the trunk learns from every
  task each step. A task's loss is scaled by world_size / (ranks running it), so after DDP's
  averaging its head's gradient is the mean over the ranks that ran it.

Motion segmentation needs frames with motion masks, which the image data does not have: the
task declares a second input, the frames and masks of `videos` (what `selfsup video masks`
wrote; the command line computes and caches them for videos or frame folders), read by the
loop through the same door as `selfsup train motion-segmentation` reads them.

Sub-task settings go under `settings.<task name>`, e.g. `multitask.settings.exemplar.loss=infonce`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from selfsup import dist
from selfsup.backbones import Backbone
from selfsup.backbones.lasso import LassoAlpha, LassoTrunk, lasso_applies
from selfsup.backbones.trunk_gradients import TrunkGradients, TrunkReader
from selfsup.config import ConfigError, param
from selfsup.data import views as V
from selfsup.data.streams import Images
from selfsup.data.trunk_input import TrunkInput
from selfsup.tasks.base import PretextTask
from selfsup.tasks.registry import build_task, list_tasks, register_task, task_config_class

PAPER_TASKS = ["relative-position", "colorization", "exemplar", "motion-segmentation"]
MOTION_TASK = "motion-segmentation"


@dataclass
class MultitaskConfig:
    tasks: list[str] = param(
        list(PAPER_TASKS), "Sub-tasks sharing the trunk (the paper's four by default)."
    )
    weights: list[float] = param([], "Loss weight per task, in `tasks` order; empty: all 1.")
    sampling: str = param(
        "all",
        "all: every task every step; random: one task per step, drawn by weight.",
        choices=("all", "random"),
    )
    lasso: str = param(
        "auto",
        "Heads read a learned combination of a stage's residual units. `auto`: on with a "
        "ResNet trunk (as in the paper), off with an AlexNet, which has no residual units; "
        "`on` / `off` (or true / false) force it.",
        choices=("auto", "on", "off"),
        bool_means=("off", "on"),
    )
    lasso_penalty: float = param(
        1e-3, "lambda of the L1 penalty on alpha (larger: sparser).", low=0.0
    )
    lasso_stage: int = param(0, "Trunk stage whose units are combined; 0: the last.", low=0)
    harmonize: bool = param(
        False,
        "Feed every task colorization's input, CIE lightness replicated to 3 channels (paper: "
        "relative position gets colorization's preprocessing); evaluation and export feed it "
        "too.",
    )
    trunk_grad_norm: float = param(
        0.0,
        "0: each task's gradient reaches the trunk as its weighted loss gives it (the plain "
        "sum). > 0: every task's gradient into the trunk is rescaled to this L2 norm in "
        "backward, so a task with a large loss scale cannot drown the others (the logged "
        "<task>/trunk_grad_norm of a plain run shows the scales).",
        low=0.0,
    )
    split_by_rank: bool = param(False, "Under torchrun, each rank runs a subset of the tasks.")
    videos: str = param(
        "",
        "Motion-segmentation data: the folder `selfsup video masks` wrote (or its "
        "motion_masks.npz, images + masks); on the command line also videos / frame folders "
        "(masks computed once and cached).",
    )
    settings: Any = param(
        {},
        "Per-task settings: {task name: {key: value}}; resolved to every listed task's full "
        "settings.",
        sections_for="tasks",
    )

    def check(self, prefix: str) -> None:
        unknown = [t for t in self.tasks if t not in list_tasks() or t == "multitask"]
        if unknown or not self.tasks:
            raise ConfigError(
                f"{prefix}.tasks: {unknown or 'empty'}; choose from "
                f"{', '.join(t for t in list_tasks() if t != 'multitask')}"
            )
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"{prefix}.tasks: a task is listed twice")
        if self.weights and len(self.weights) != len(self.tasks):
            raise ConfigError(
                f"{prefix}.weights: {len(self.weights)} weights for {len(self.tasks)} tasks"
            )
        if any(w < 0 for w in self.weights):
            raise ConfigError(f"{prefix}.weights: must be >= 0")
        if self.settings is None:  # an empty mapping written to YAML reads back as null
            self.settings = {}
        if not isinstance(self.settings, dict):
            raise ConfigError(f"{prefix}.settings: expected a mapping of task name to settings")
        stray = [name for name in self.settings if name not in self.tasks]
        if stray:
            raise ConfigError(f"{prefix}.settings: {stray} not in {prefix}.tasks")

    def implied_settings(self, task: str) -> dict[str, tuple[Any, str]]:
        """Sub-task settings this section decides (`config.resolve` fills them in): under
        `harmonize`, those a task's config lists as `harmonized` (relative position: no
        colour dropping, no per-patch standardisation)."""
        if not self.harmonize:
            return {}
        why = "multitask.harmonize feeds every task colorization's lightness input, so it is"
        settings = getattr(task_config_class(task), "harmonized", {})
        return {key: (value, f"{why} {value}") for key, value in settings.items()}


def uses_lasso(lasso: str | bool, backbone: Backbone) -> bool:
    """Whether `multitask.lasso` (`auto`, `on`, `off`; or a bool, from Python) applies to
    `backbone`: it combines residual units, which only the ResNets have."""
    try:
        return lasso_applies(lasso, backbone)
    except ValueError as err:
        raise ConfigError(f"multitask.lasso: {err}") from err


def tasks_of_rank(num_tasks: int, rank: int, world: int) -> list[int]:
    """The task indices rank `rank` of `world` runs: tasks dealt round-robin to ranks (and
    ranks to tasks when there are more ranks than tasks)."""
    if world <= 1:
        return list(range(num_tasks))
    if world >= num_tasks:
        return [rank % num_tasks]
    return [t for t in range(num_tasks) if t % world == rank]


def ranks_per_task(num_tasks: int, world: int) -> list[int]:
    counts = [0] * num_tasks
    for rank in range(world):
        for t in tasks_of_rank(num_tasks, rank, world):
            counts[t] += 1
    return counts


@register_task
class MultiTask(PretextTask):
    name = "multitask"
    config_class = MultitaskConfig
    # Some heads sit out some steps (sampling, ranks assigned to tasks).
    ddp_find_unused_parameters = True

    def __init__(self, config: MultitaskConfig, backbone: Backbone):
        super().__init__(config, backbone)
        names = config.tasks
        # Each task reads the trunk through its own reader: what it sends back is measured.
        self.gradients = TrunkGradients(len(names), config.trunk_grad_norm)
        views: list[Backbone] = [
            TrunkReader(backbone, self.gradients, i) for i in range(len(names))
        ]
        self.alphas: LassoAlpha | None = None
        if uses_lasso(config.lasso, backbone):
            stage = config.lasso_stage or getattr(backbone, "num_stages", 0)
            units = backbone.unit_names(stage)
            self.alphas = LassoAlpha(len(names), len(units))
            views = [LassoTrunk(view, self.alphas, i, stage) for i, view in enumerate(views)]
        self.subtasks = nn.ModuleDict(
            {
                name: build_task(name, config.settings[name], view)
                for name, view in zip(names, views)
            }
        )
        self.weights = list(config.weights) or [1.0] * len(names)
        self.ran: list[int] = []  # the tasks of the last forward (host-side, no sync)

    # -- data -----------------------------------------------------------------------------------
    def inputs(self) -> list:
        """The training images, and for motion segmentation the frames and masks of `videos`
        (fields `motion_images`, `motion_masks`)."""
        wanted = [Images()]
        if MOTION_TASK in self.subtasks:
            about = (
                "frames with motion masks: pass --videos, the folder `selfsup video masks` wrote"
            )
            wanted.append(
                Images(
                    self.config.videos,
                    "multitask.videos",
                    masks=True,
                    prefix="motion_",
                    about=about,
                )
            )
        return wanted

    def single_tasks(self) -> dict[str, PretextTask]:
        return dict(self.subtasks)

    def min_image_size(self) -> int:
        return max(task.min_image_size() for task in self.subtasks.values())

    def lr_scales(self) -> dict[str, float]:
        return {
            f"subtasks.{name}.{prefix}": scale
            for name, task in self.subtasks.items()
            for prefix, scale in task.lr_scales().items()
        }

    def no_weight_decay(self) -> set[str]:
        """alpha: its penalty is the L1 of the lasso, an L2 on top would fight it."""
        own = {"alphas."} if self.alphas is not None else set()
        return own | {
            f"subtasks.{name}.{prefix}"
            for name, task in self.subtasks.items()
            for prefix in task.no_weight_decay()
        }

    def backward_metrics(self) -> dict[str, torch.Tensor]:
        """`<task>/trunk_grad_norm` of every task of the last step: the L2 norm of the
        gradient it sent into the trunk (weights included, loss scaling excluded, before
        `trunk_grad_norm` rescaled it)."""
        names = list(self.subtasks)
        norms = self.gradients.norms.clone()  # the buffer is rewritten by the next backward
        return {f"{names[t]}/trunk_grad_norm": norms[t] for t in self.ran}

    # -- steps ----------------------------------------------------------------------------------
    def active_tasks(self, generator: torch.Generator) -> list[int]:
        mine = tasks_of_rank(len(self.weights), dist.rank(), dist.world_size())
        if not self.config.split_by_rank:
            mine = list(range(len(self.weights)))
        if self.config.sampling == "all":
            return mine
        weights = torch.tensor([self.weights[t] for t in mine], dtype=torch.float)
        return [mine[int(torch.multinomial(weights, 1, generator=generator))]]

    def harmonized(
        self, images: torch.Tensor, task: PretextTask, cache: dict | None = None
    ) -> torch.Tensor:
        """uint8 images (B, 3, S, S) -> what `task` builds its views from: under `harmonize`,
        colorization's lightness input (float in [0, 1], L* / 100 on every channel; the task
        crops and normalises it as it would colour images), else the images. Colorization
        makes that input itself and keeps the colours for its targets. `cache` keeps one
        conversion per batch for the tasks of a step."""
        if not self.config.harmonize or not getattr(task, "sees_color", True):
            return images
        cache = {} if cache is None else cache
        if id(images) not in cache:
            cache[id(images)] = TrunkInput("lightness").convert(V.to_float(images))
        return cache[id(images)]

    def make_views(
        self,
        images: torch.Tensor,
        generator: torch.Generator,
        motion_images: torch.Tensor | None = None,
        motion_masks: torch.Tensor | None = None,
    ) -> dict:
        names = list(self.subtasks)
        views: dict = {}
        converted: dict[int, torch.Tensor] = {}  # harmonized inputs, converted once per step
        for t in self.active_tasks(generator):
            task = self.subtasks[names[t]]
            source = motion_images if names[t] == MOTION_TASK else images
            x = self.harmonized(source, task, converted)
            if names[t] == MOTION_TASK:
                views[names[t]] = task.make_views(x, generator, masks=motion_masks)
            else:
                views[names[t]] = task.make_views(x, generator)
        return views

    def view_grids(self, views: dict, count: int = 8) -> dict[str, torch.Tensor]:
        """Every task of the step draws its own views: `<task>/<grid>`."""
        return {
            f"{name}/{key}": grid
            for name, task_views in views.items()
            for key, grid in self.subtasks[name].view_grids(task_views, count).items()
        }

    def forward(self, views: dict) -> dict[str, torch.Tensor]:
        names = list(self.subtasks)
        counts = ranks_per_task(len(names), dist.world_size())
        out: dict[str, torch.Tensor] = {}
        total = None
        self.ran = [names.index(name) for name in views]
        for name, task_views in views.items():
            t = names.index(name)
            result = self.subtasks[name](task_views)
            scale = dist.world_size() / counts[t] if self.config.split_by_rank else 1.0
            factor = self.weights[t] * scale
            # Not `1.0 * loss`: torch.compile (2.14) folds the product into the loss itself
            # and, with a detached copy of that loss among the outputs (the per-task metrics
            # below), returned the total without its grad_fn.
            term = result["loss"] if factor == 1.0 else factor * result["loss"]
            total = term if total is None else total + term
            out.update({f"{name}/{key}": value.detach() for key, value in result.items()})
        if self.alphas is not None:
            l1 = self.alphas.l1()
            total = total + self.config.lasso_penalty * l1
            out["lasso_l1"] = l1.detach()
            out["alpha_nonzero"] = (self.alphas.alpha.abs() > 1e-3).float().mean().detach()
        out["loss"] = self.gradients.scaled(total)
        return out
