"""The `selfsup` command line: train, eval, report, video, graph, data, demo, list, config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from selfsup import __version__
from selfsup.analysis.cli import add_inspect_parser, command_inspect
from selfsup.arguments import positive_int
from selfsup.dense.cli import DENSE_PROTOCOLS, add_dense_parsers, command_dense
from selfsup.eval.cli import (
    RUN_HELP,
    add_eval_parser,
    add_report_parser,
    command_eval,
    command_report,
)
from selfsup.export.cli import add_embed_parser, add_export_parser, command_embed, command_export
from selfsup.graph.cli import add_graph_parser, command_graph
from selfsup.outputs import output_folder
from selfsup.video.cli import add_video_parser, command_video

if TYPE_CHECKING:
    from selfsup.config import ExperimentConfig
    from selfsup.data.sources import ImageSource

EXAMPLES = """examples:
  selfsup demo
  selfsup train counting --data images/ --out runs/count --steps 5000
  selfsup train counting --data cifar10_train.npz --out runs/c10 optim.lr=0.02 data.batch_size=64
  selfsup data pack images/ --out shards/
  selfsup train counting --data 'shards/train-{000000..000009}.tar' --out runs/count
  torchrun --nproc_per_node=2 -m selfsup train counting --data images/ --out runs/ddp
  selfsup eval linear runs/count --data train.npz --test test.npz --json probe.json
  selfsup eval knn runs/count --data train.npz --test test.npz
  selfsup eval finetune runs/count --data train.npz --test test.npz --steps 500
  selfsup report runs/count --data train.npz --test test.npz --out report/
  selfsup inspect runs/count --data test.npz --out inspect/
  selfsup export runs/count --format onnx --out count.onnx
  selfsup embed runs/count my_photos/ --out features.npz
  selfsup video masks clip.mp4 --out masks/
  selfsup video patches videos/ --out patches/ --workers 2
  selfsup graph build --patches patches/ --embed runs/relpos --out graph.npz
  selfsup train transitive --data patches/patches.npz --graph graph.npz --out runs/ti
  selfsup train multitask --config multitask_small --data images/ \
      --videos masks/ --out runs/mt --tasks rotation,exemplar,motion-segmentation
"""


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="pretrain a backbone with a pretext task",
        description="Train TASK on unlabelled images. Settings come from the config dataclasses, "
        "then --config FILE, then key=value overrides (see `selfsup config TASK`). If OUT "
        "holds a checkpoint, training resumes from it. Metrics go to OUT/metrics.jsonl, and "
        "with train.logger=tensorboard also to OUT/tensorboard/ (with grids of the views). "
        "backbone.name=timm:<model> trains any timm model (pip install 'selfsup[timm]').",
    )
    p.add_argument("task", help="pretext task (see `selfsup list tasks`)")
    p.add_argument(
        "--data",
        help="image folder or .npz, .tar shards (one, a folder of them, or a pattern such as "
        "'shards/train-{000000..000099}.tar'; `selfsup data pack` writes them), or the folder "
        "`video masks` or `video patches` wrote (sets data.path)",
    )
    p.add_argument(
        "--out", required=True, type=output_folder, help="run folder: config, metrics, checkpoints"
    )
    p.add_argument(
        "--config",
        help="a preset name (counting_small; `selfsup list configs`) or a YAML config file",
    )
    p.add_argument("--steps", type=positive_int, help="total training steps (sets train.steps)")
    p.add_argument(
        "--graph",
        help="transitive: what `graph build --out` was given (sets transitive.graph; the data "
        "defaults to the graph's patches)",
    )
    p.add_argument("--tasks", help="multitask: comma-separated sub-tasks (sets multitask.tasks)")
    p.add_argument(
        "--videos",
        help="multitask: motion-segmentation data, the folder `video masks` wrote (or its "
        "motion_masks.npz), or videos (sets multitask.videos)",
    )
    p.add_argument(
        "--change",
        action="append",
        default=[],
        metavar="KEY[,KEY]",
        help="resuming OUT with other settings than it was trained with: the keys to change "
        "from the checkpoint's step on, e.g. --change optim.lr (without it such a resume is "
        "refused, naming the keys)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # key=value overrides are collected from the leftover arguments in `main` (an nargs="*"
    # positional after TASK would be consumed, empty, before the options are parsed).
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. optim.lr=0.01 data.batch_size=128",
    )


DATA_EXAMPLES = """examples:
  selfsup data pack images/ --out shards/
  selfsup data pack train.npz --out shards/ --shard-size 5000
  selfsup train counting --data 'shards/train-{000000..000004}.tar' --out runs/count
  selfsup train counting --data shards/ --out runs/count
  selfsup data split labelled/ --out split/ --holdout 50
  selfsup eval linear runs/count --data split/train.npz --test split/val.npz
"""


def add_data_parser(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser(
        "data",
        help="prepare data: pack images into tar shards, split off a held-out set",
        epilog=DATA_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    pack = sub.add_parser(
        "pack",
        help="write an image folder or an .npz as .tar shards that --data reads",
        description="Write every image of SOURCE, with its label, as WebDataset samples "
        "(KEY.jpg or .png, KEY.cls) into --out/PREFIX-000000.tar, ... The images keep their "
        "encoded bytes (decoded arrays become PNG), so training on the shards sees the same "
        "pixels as on SOURCE. Needs the webdataset extra: pip install 'selfsup[webdataset]'.",
    )
    pack.add_argument(
        "source", help="an image folder (flat or one sub-folder per class) or an .npz"
    )
    pack.add_argument(
        "--out", required=True, help="folder for the shards (new, or holding no .tar files)"
    )
    pack.add_argument(
        "--shard-size",
        type=positive_int,
        default=1000,
        help="samples per shard (default 1000; aim for shards of 100 MB to 1 GB: for "
        "ImageNet's ~110 KB JPEGs, 1000 to 10000)",
    )
    pack.add_argument("--prefix", default="train", help="shard names' prefix (default train)")
    pack.add_argument("--quiet", action="store_true", help="no progress bar")
    split = sub.add_parser(
        "split",
        help="hold out images of every class: train.npz and val.npz for --data and --test",
        description="Write labelled SOURCE as --out/train.npz and --out/val.npz, the second "
        "holding out --holdout images of every class, so that evaluation (--data, --test) "
        "never scores a probe on images it was fitted on. Both keep the images' encoded "
        "bytes: they decode to exactly SOURCE's pixels.",
    )
    split.add_argument("source", help="labelled images: an ImageFolder tree, an .npz or shards")
    split.add_argument("--out", required=True, help="folder for train.npz and val.npz")
    split.add_argument(
        "--holdout",
        type=float,
        required=True,
        help="images held out of every class: a count (e.g. 50), or a fraction under 1 (0.1)",
    )
    split.add_argument("--seed", type=int, default=0, help="seed of the draw (default 0)")
    split.add_argument(
        "--last",
        action="store_true",
        help="hold out the last images of each class in SOURCE's order instead of a draw",
    )
    split.add_argument("--quiet", action="store_true", help="no progress bar")


def command_data(args: argparse.Namespace) -> None:
    from selfsup.data.formats import open_source

    source = open_source(args.source)
    if args.data_command == "split":
        split_data(source, args)
    else:
        pack_data(source, args)


def split_data(source: ImageSource, args: argparse.Namespace) -> None:
    from selfsup.data.sources import DataFormatError
    from selfsup.data.split import split_source

    targets = [Path(args.out) / name for name in ("train.npz", "val.npz")]
    existing = [str(path) for path in targets if path.exists()]
    if existing:
        raise DataFormatError(f"{' and '.join(existing)}: already there; choose another --out")
    seed = None if args.last else args.seed
    written = split_source(source, Path(args.out), args.holdout, seed, not args.quiet)
    for path, count in written.items():
        print(f"wrote {path}: {count} images")
    train, val = written
    print(f"evaluate with --data {train} --test {val}")


def pack_data(source: ImageSource, args: argparse.Namespace) -> None:
    from selfsup.data.pack import pack, shard_pattern
    from selfsup.data.shards import ShardSource

    if isinstance(source, ShardSource):
        from selfsup.data.sources import DataFormatError

        raise DataFormatError(f"{args.source}: already shards; pack reads a folder or an .npz")
    shards = pack(
        source, args.out, shard_size=args.shard_size, prefix=args.prefix, progress=not args.quiet
    )
    labels = ", with labels" if source.labels is not None else ""
    print(f"wrote {len(source)} images{labels} in {len(shards)} shards")
    print(f"train on them with --data '{shard_pattern(shards)}'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsup",
        description="Self-supervised visual representation learning with pretext tasks.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"selfsup {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_train_parser(commands)
    add_dense_parsers(add_eval_parser(commands), RUN_HELP)
    add_report_parser(commands)
    add_inspect_parser(commands)
    add_export_parser(commands)
    add_embed_parser(commands)
    add_video_parser(commands)
    add_graph_parser(commands)
    add_data_parser(commands)
    demo = commands.add_parser(
        "demo",
        help="pretrain counting on the bundled CIFAR-10 sample and probe it",
        description="Pretrain the counting task for a few minutes on the CIFAR-10 sample that "
        "ships with selfsup, then compare per-layer linear probes against random init.",
    )
    demo.add_argument(
        "--out", default="runs/demo", type=output_folder, help="run folder (default runs/demo)"
    )
    demo.add_argument(
        "--steps", type=positive_int, help="pretraining steps (default: the demo preset)"
    )

    lst = commands.add_parser(
        "list",
        help="list tasks, backbones or config presets",
        description="List the pretext tasks, selfsup's own backbones (besides them any timm "
        "model trains as backbone.name=timm:<model>) or the shipped config presets.",
    )
    lst.add_argument("what", choices=("tasks", "backbones", "configs"))
    cfg = commands.add_parser(
        "config",
        help="print a config with every key and its help as YAML, or what training it costs",
        description="Print every config key of NAME (a task: its defaults; a preset or a YAML "
        "file: that config) with its value and help; a starting point for --config files: "
        "selfsup config counting > my.yaml. With --estimate, print what a training step of "
        "that config costs per image instead (parameters, FLOPs, activation memory), "
        "measured with one forward and backward pass on the CPU, to size a GPU run.",
    )
    cfg.add_argument("task", metavar="NAME", help="a task, a preset name or a YAML config file")
    cfg.add_argument(
        "--estimate",
        action="store_true",
        help="parameters, training FLOPs and activation memory per image",
    )
    cfg.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. data.image_size=64",
    )
    return parser


def graph_settings(args: argparse.Namespace) -> dict:
    """--graph sets transitive.graph, and the data to the patches the graph was built on
    unless --data names them."""

    from selfsup.config import ConfigError
    from selfsup.data.patch_graph import GraphError, load_graph

    if args.task != "transitive":
        raise ConfigError(f"--graph: only the transitive task reads a graph, not {args.task}")
    values: dict = {"transitive": {"graph": args.graph}}
    if not args.data:
        patches = str(load_graph(args.graph, keys=("patches_path",))["patches_path"])
        if not Path(patches).exists():
            raise GraphError(
                f"{args.graph}: its patches {patches} are no longer there; pass --data with "
                "the patch dataset it was built on"
            )
        values["data"] = {"path": patches}
    return values


def multitask_settings(args: argparse.Namespace) -> dict:
    from selfsup.config import ConfigError

    if args.task != "multitask":
        raise ConfigError(f"--tasks/--videos: only the multitask task reads them, not {args.task}")
    section: dict = {}
    if args.tasks:
        section["tasks"] = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.videos:
        section["videos"] = args.videos
    return {"multitask": section}


def train_config(args: argparse.Namespace) -> ExperimentConfig:
    """The resolved ExperimentConfig of a parsed `selfsup train` command line."""
    from selfsup.api import configure
    from selfsup.config import ConfigError, parse_overrides

    sections = []
    if args.data:
        sections.append({"data": {"path": args.data}})
    if args.steps is not None:
        sections.append({"train": {"steps": args.steps}})
    if args.graph:
        sections.append(graph_settings(args))
    if args.tasks or args.videos:
        sections.append(multitask_settings(args))
    sections.append(parse_overrides(args.overrides))
    cfg = configure(args.task, args.config, sections)
    if not cfg.data.path:
        raise ConfigError("data.path: no training data given (use --data PATH)")
    return cfg


def command_train(args: argparse.Namespace) -> None:
    from selfsup.train import train

    changes = tuple(key.strip() for given in args.change for key in given.split(",") if key)
    train(train_config(args), args.out, progress=not args.quiet, changes=changes)


def command_config(args: argparse.Namespace) -> None:
    from selfsup.config import commented_yaml, load_yaml, merge, parse_overrides, resolve
    from selfsup.presets import config_file
    from selfsup.tasks import list_tasks, task_config_class

    named_task = args.task in list_tasks()
    values = {"task": args.task} if named_task else load_yaml(config_file(args.task))
    cfg = resolve(merge(values, parse_overrides(args.overrides)), task_config_class)
    if not args.estimate:
        print(commented_yaml(cfg), end="")
        return
    from selfsup.estimate import estimate

    print(f"{args.task}: task {cfg.task}, backbone {cfg.backbone.name}")
    print("\n".join(estimate(cfg).lines()))


def command_list(args: argparse.Namespace) -> None:
    if args.what == "tasks":
        from selfsup.tasks import list_tasks

        print("\n".join(list_tasks()))
    elif args.what == "configs":
        print_presets()
    else:
        from selfsup.backbones import list_backbones

        print("\n".join(list_backbones()))
        print("timm:<model>  (any timm model, e.g. timm:resnet50; pip install 'selfsup[timm]')")


def print_presets() -> None:
    """The shipped presets (`--config NAME`): name, task and what each is for."""
    from selfsup.presets import describe, preset_files, preset_folder

    rows = [(name, *describe(path)) for name, path in preset_files().items()]
    width = max(len(name) for name, *_ in rows)
    task_width = max(len(task) for _, task, _ in rows)
    for name, task, about in rows:
        print(f"{name:<{width}}  {task:<{task_width}}  {about}")
    print(f"\n(files in {preset_folder()}; copy one to edit it)")


def command_demo(args: argparse.Namespace) -> None:
    from selfsup.demo import run_demo

    run_demo(args.out, steps=args.steps)


def user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by the user's input: reported in one line, without a traceback."""
    from selfsup.checkpoint import CheckpointError
    from selfsup.config import ConfigError
    from selfsup.data import BadImageError, DataFormatError
    from selfsup.data.patch_graph import GraphError
    from selfsup.export.formats import ExportError
    from selfsup.metrics import NonFiniteLossError
    from selfsup.outputs import FolderBusy, OutputOverInput
    from selfsup.video.reader import VideoError

    return (
        ConfigError,
        DataFormatError,
        BadImageError,
        CheckpointError,
        NonFiniteLossError,
        VideoError,
        ExportError,
        GraphError,
        FolderBusy,
        OutputOverInput,
    )


def command_any_eval(args: argparse.Namespace) -> None:
    """Image-level protocols (selfsup.eval) or dense ones, with their own data and results."""
    if args.protocol in DENSE_PROTOCOLS:
        return command_dense(args)
    return command_eval(args)


COMMANDS = {
    "train": command_train,
    "eval": command_any_eval,
    "report": command_report,
    "inspect": command_inspect,
    "export": command_export,
    "embed": command_embed,
    "demo": command_demo,
    "list": command_list,
    "config": command_config,
    "video": command_video,
    "graph": command_graph,
    "data": command_data,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line parsed, with key=value overrides collected wherever they stand."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        not_overrides = [a for a in extra if "=" not in a or a.startswith("-")]
        if not hasattr(args, "overrides") or not_overrides:
            parser.error(f"unrecognized arguments: {' '.join(not_overrides or extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


# The options that name what a command reads (data read whole; models and settings), and what
# it writes (outputs.check_outputs_apart).
DATA_OPTIONS = ("data", "test", "images", "videos", "patches", "eval", "supervised_data", "source")
MODEL_OPTIONS = ("run", "runs", "embed", "graph", "config")
OUTPUT_OPTIONS = ("out", "json", "grid")
POSITIONAL = ("run", "runs", "images", "videos", "source")


def paths_of(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, str]:
    """option -> path, for the options of `names` the command has and was given (lists give
    one entry per path)."""
    found = {}
    for name in names:
        value = getattr(args, name, None)
        for i, path in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(path, str | Path) and str(path):
                label = name.upper() if name in POSITIONAL else f"--{name.replace('_', '-')}"
                found[label + (f"[{i}]" if i else "")] = str(path)
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from selfsup.outputs import check_outputs_apart

        check_outputs_apart(
            paths_of(args, OUTPUT_OPTIONS),
            paths_of(args, DATA_OPTIONS),
            paths_of(args, MODEL_OPTIONS),
        )
        COMMANDS[args.command](args)
    except user_errors() as err:
        print(f"selfsup: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # The system refused a file (unwritable --out, disk full): its message names the path.
        print(f"selfsup: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        # A crashed or stuck peer of a distributed run: one line, not a gloo traceback.
        from selfsup.dist import peer_lost_message

        lost = peer_lost_message(err)
        if lost is None:
            raise
        print(f"selfsup: error: {lost}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "selfsup: interrupted; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
