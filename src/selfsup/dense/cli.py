"""`selfsup eval depth`, `detect` and `voc07`: arguments and what they run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from selfsup.arguments import fraction, positive_float, positive_int
from selfsup.dense.settings import DepthSettings, DetectSettings, Voc07Settings

if TYPE_CHECKING:
    from selfsup.runs import LoadedBackbone

DENSE_PROTOCOLS = ("depth", "detect", "voc07")


def add_shared_options(p: argparse.ArgumentParser, run_help: str) -> None:
    p.add_argument("run", metavar="RUN", help=run_help)
    p.add_argument(
        "--json",
        required=True,
        help="write the results to this .json file (.json added when missing; a folder gets "
        "results.json)",
    )
    p.add_argument("--grid", type=Path, help="image grid PNG (default: the --json path, .png)")
    p.add_argument("--steps", type=positive_int, help="training steps (a smoke run: 2)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="learning rate of the head / decoder")
    p.add_argument(
        "--train-fraction",
        type=fraction,
        default=0.8,
        help="without --test: train on this first fraction of --data, in order, and test on "
        "the rest (default 0.8; never a random split)",
    )
    p.add_argument("--layers", nargs="+", help="backbone layers read (default: 3, coarsest)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    baseline = p.add_argument_group("supervised:<backbone|run> baselines")
    baseline.add_argument(
        "--supervised-data", help="labelled images (folder or .npz) the baseline trains on"
    )
    baseline.add_argument("--baseline-steps", type=positive_int, default=1000)
    baseline.add_argument("--cache-dir", type=Path, help="where baselines are kept")


def add_depth_parser(protocols: argparse._SubParsersAction, run_help: str) -> None:
    p = protocols.add_parser(
        "depth",
        help="depth or surface normals from RGB with a light decoder",
        description="Train an FPN-style decoder on 3 backbone layers to predict depth (berHu "
        "or scale-invariant log loss) or surface normals (cosine loss; ground truth derived "
        "from depth and the camera intrinsics), on valid pixels only, and score held-out "
        "frames: delta < 1.25^k, abs-rel, RMSE (depth); mean/median angle and %% within "
        "11.25/22.5/30 degrees (normals). RGBD: a packed 7-Scenes .npz, a folder of RGB + "
        "16-bit depth PNG pairs, or the NYU Depth v2 labelled .mat.",
    )
    add_shared_options(p, run_help)
    p.add_argument("--data", required=True, metavar="RGBD", help="RGB-D frames, in order")
    p.add_argument("--test", metavar="RGBD", help="test frames (default: the end of --data)")
    p.add_argument("--target", choices=("depth", "normals"), default="depth")
    p.add_argument("--loss", choices=("berhu", "silog"), default=DepthSettings.loss)
    p.add_argument(
        "--size",
        type=positive_int,
        default=DepthSettings.size,
        help=f"shorter image side in px (default {DepthSettings.size}: 96x128 for 640x480)",
    )
    p.add_argument(
        "--depth-scale", type=positive_float, default=0.001, help="metres per PNG unit (mm)"
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--frozen", action="store_true", help="train the decoder only (default)")
    mode.add_argument("--finetune", action="store_true", help="train the backbone too (lr x0.1)")


def add_detect_parser(protocols: argparse._SubParsersAction, run_help: str) -> None:
    p = protocols.add_parser(
        "detect",
        help="fine-tune Faster R-CNN + FPN; mAP@0.5 and mAP@[.5:.95]",
        description="Fine-tune torchvision's Faster R-CNN with an FPN on RUN's backbone (no "
        "pretrained weights anywhere) once per seed; score COCO mAP with torchmetrics. DET: a "
        "YOLO folder (images/ + labels/, classes.txt), a COCO instances .json, or a VOC folder.",
    )
    add_shared_options(p, run_help)
    p.add_argument("--data", required=True, metavar="DET", help="labelled images")
    p.add_argument("--test", metavar="DET", help="test images (default: the end of --data)")
    p.add_argument("--images", type=Path, help="image folder of a COCO .json")
    p.add_argument(
        "--size",
        type=positive_int,
        default=DetectSettings.size,
        help=f"longer image side in px (default {DetectSettings.size})",
    )
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="one run per seed (default 0 1 2)"
    )


def add_voc07_parser(protocols: argparse._SubParsersAction, run_help: str) -> None:
    p = protocols.add_parser(
        "voc07",
        help="VOC 2007 multi-label classification by fine-tuning; mAP",
        description="Fine-tune RUN's whole backbone with a linear head and per-class sigmoids "
        "on a VOC folder (Annotations/ + JPEGImages/; split by ImageSets/Main/trainval.txt "
        "and test.txt when present) and score VOC 2007's mAP (11-point interpolated AP per "
        "class, difficult-only images left out of their class), the papers' classification "
        "transfer.",
    )
    add_shared_options(p, run_help)
    p.add_argument("--data", required=True, metavar="VOC", help="a VOC folder")
    p.add_argument("--test", metavar="VOC", help="test images (default: its test list)")
    p.add_argument(
        "--size",
        type=positive_int,
        default=Voc07Settings.size,
        help=f"square image side in px (default {Voc07Settings.size})",
    )
    p.add_argument("--seed", type=int, default=Voc07Settings.seed)


def add_dense_parsers(protocols: argparse._SubParsersAction, run_help: str) -> None:
    add_depth_parser(protocols, run_help)
    add_detect_parser(protocols, run_help)
    add_voc07_parser(protocols, run_help)


def given(args: argparse.Namespace, *names: str) -> dict:
    """The options the user set, under the settings' field names."""
    values = {name: getattr(args, name) for name in names}
    return {name: value for name, value in values.items() if value is not None}


def resolve_backbone(args: argparse.Namespace) -> LoadedBackbone:
    """RUN as the other evaluations read it (eval/baselines.py); a supervised baseline trains
    on --supervised-data at the run's image size, through the same cached code."""
    from selfsup.config import ConfigError
    from selfsup.eval.baselines import architecture, resolve_model, split_spec
    from selfsup.eval.finetune import FinetuneSettings
    from selfsup.eval.protocol import EvalOptions, load_labelled
    from selfsup.outputs import default_cache_dir

    options = EvalOptions(
        device=args.device, cache_dir=args.cache_dir or default_cache_dir(), progress=not args.quiet
    )
    kind, target = split_spec(args.run)
    labelled = None  # only a supervised baseline reads labelled images
    if kind == "supervised":
        if not args.supervised_data:
            raise ConfigError(
                f"{args.run}: a supervised baseline needs --supervised-data (labelled images)"
            )
        size = int(architecture(target)[1].get("data", {}).get("image_size", 32))
        labelled = load_labelled(args.supervised_data, size, progress=not args.quiet)
    settings = FinetuneSettings(steps=args.baseline_steps)
    return resolve_model(args.run, labelled, labelled, options, settings)


def command_depth(args: argparse.Namespace) -> dict:
    from selfsup.dense.depth_eval import run_depth_eval
    from selfsup.dense.rgbd import load_rgbd, split_by_index

    settings = DepthSettings(
        target=args.target,
        loss=args.loss,
        size=args.size,
        finetune=args.finetune,
        layers=args.layers or [],
        **given(args, "steps", "batch_size", "lr"),
    )
    progress = not args.quiet
    frames = load_rgbd(args.data, args.size, args.depth_scale, progress)
    if args.test:
        train, test = frames, load_rgbd(args.test, args.size, args.depth_scale, progress)
    else:
        train, test = split_by_index(frames, args.train_fraction)
    loaded = resolve_backbone(args)
    grid = args.grid or args.json.with_suffix(".png")
    return run_depth_eval(loaded, train, test, settings, args.device, progress, grid)


def command_detect(args: argparse.Namespace) -> dict:
    from selfsup.dense.detect_eval import run_detect_eval
    from selfsup.dense.detection_data import open_detection, split_by_index

    settings = DetectSettings(
        size=args.size,
        seeds=args.seeds,
        layers=args.layers or [],
        **given(args, "steps", "batch_size", "lr"),
    )
    data = open_detection(args.data, args.images)
    if args.test:
        train, test = data, open_detection(args.test, args.images)
    else:
        train, test = split_by_index(data, args.train_fraction)
    loaded = resolve_backbone(args)
    grid = args.grid or args.json.with_suffix(".png")
    return run_detect_eval(loaded, train, test, settings, args.device, not args.quiet, grid)


def command_voc07(args: argparse.Namespace) -> dict:
    from selfsup.dense.voc07 import run_voc07_eval, voc_splits

    settings = Voc07Settings(
        size=args.size, seed=args.seed, **given(args, "steps", "batch_size", "lr")
    )
    train, test = voc_splits(args.data, args.test, args.train_fraction)
    loaded = resolve_backbone(args)
    return run_voc07_eval(loaded, train, test, settings, args.device, not args.quiet)


def summary_line(result: dict) -> str:
    if result["protocol"] == "voc07":
        return (
            f"{result['model']} voc07: mAP {result['map_11point']:.3f} (11-point), "
            f"{result['map']:.3f} (exact) over {result['classes_scored']} classes"
        )
    if result["protocol"] == "detect":
        parts = [f"{key} {s['mean']:.3f} ± {s['std']:.3f}" for key, s in result["summary"].items()]
        return f"{result['model']} detect ({len(result['seeds'])} seeds): " + ", ".join(parts)

    def listed(metrics: dict) -> str:
        return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "pixels")

    return (
        f"{result['model']} {result['protocol']}: {listed(result['metrics'])}\n"
        f"  (constant training-set value: {listed(result['constant_baseline'])})"
    )


def command_dense(args: argparse.Namespace) -> None:
    from selfsup.outputs import output_file

    args.json = output_file(args.json, "results.json")
    run = {"depth": command_depth, "detect": command_detect, "voc07": command_voc07}
    result = run[args.protocol](args)
    print(summary_line(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.json}" + (f" and {result['grid']}" if "grid" in result else ""))
