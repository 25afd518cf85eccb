"""`selfsup eval linear|knn|finetune` and `selfsup report`: arguments and what they run
(`eval depth|detect` live in selfsup.dense, which selfsup.cli adds to `eval`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfsup.arguments import non_negative_float, non_negative_int, positive_float, positive_int
from selfsup.eval.settings import FinetuneSettings, KnnSettings, ProbeSettings
from selfsup.outputs import (
    default_cache_dir,
    input_file,
    nothing_half_written,
    output_file,
    output_folder,
)

RUN_HELP = (
    "run folder, checkpoint file, safetensors export (what `export --out` was given), "
    "random:<backbone|run> (fresh weights) or supervised:<backbone|run> (trained with labels "
    "on --data, the same budget as the run)"
)
JSON_HELP = (
    "write the results to this .json file (.json added when missing; a folder gets results.json)"
)


def add_common(p: argparse.ArgumentParser, multiple: bool = False) -> None:
    if multiple:
        p.add_argument(
            "runs",
            nargs="+",
            metavar="RUN",
            help=RUN_HELP + ", or saved results: what `eval --json` or `report --out` was given",
        )
    else:
        p.add_argument("run", metavar="RUN", help=RUN_HELP)
    p.add_argument("--data", required=True, help="labelled training images (folder or .npz)")
    p.add_argument(
        "--test",
        required=True,
        help="labelled test images (folder or .npz; `selfsup data split` holds them out of "
        "one labelled set)",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        help="layers to evaluate (default: the probe layers that trained); a multi-task lasso "
        "run also has lasso:<task>, the combination of units that task's head reads",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        help="decode at this size (default: the run's data.image_size)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"feature and baseline cache (default {default_cache_dir()}; $SELFSUP_CACHE)",
    )
    p.add_argument("--no-cache", action="store_true", help="extract features afresh, keep none")
    p.add_argument(
        "--baseline-steps",
        type=positive_int,
        default=FinetuneSettings.steps,
        help="training steps of supervised:<backbone> baselines (with a run: the run's steps)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_linear_options(p: argparse.ArgumentParser) -> None:
    defaults = " ".join(f"{wd:g}" for wd in ProbeSettings.weight_decays)
    p.add_argument(
        "--weight-decay",
        type=non_negative_float,
        nargs="+",
        default=list(ProbeSettings.weight_decays),
        help=f"L2 strengths tried on a validation split of --data (default {defaults}); one "
        "value skips the selection",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=ProbeSettings.steps,
        help=f"L-BFGS iterations at most per fit (default {ProbeSettings.steps})",
    )
    p.add_argument(
        "--selection-rows",
        type=non_negative_int,
        default=ProbeSettings.selection_rows,
        help="training rows the L2 selection fits at most, at the same prior strength; 0 uses "
        f"all (default {ProbeSettings.selection_rows})",
    )
    p.add_argument(
        "--tolerance",
        type=non_negative_float,
        default=ProbeSettings.tolerance,
        help="stop a fit when 10 iterations lower its loss by less than this fraction; 0 runs "
        f"every fit to --steps (default {ProbeSettings.tolerance:g})",
    )
    p.add_argument(
        "--max-dims",
        type=pooling_dims,
        default=4096,
        help="pool each layer's map (average, to the largest grid) to at most this many "
        f"dimensions (default 4096); `zhang`: {ZHANG_DIMS}, the about 9,000 dimensions per "
        "layer of Zhang et al.'s AlexNet protocol (conv1 96x10x10, conv2 256x6x6, conv3-4 "
        "384x5x5, conv5 256x6x6)",
    )


# Zhang, Isola & Efros (colorization, ECCV 2016; split-brain, CVPR 2017) pool each AlexNet
# layer to about 9,000 values; the largest grid within 9,600 gives their sizes exactly.
ZHANG_DIMS = 9600


def pooling_dims(value: str) -> int:
    """--max-dims: a number of dimensions, or `zhang` for Zhang et al.'s protocol."""
    if value.strip().lower() == "zhang":
        return ZHANG_DIMS
    try:
        dims = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or `zhang`, got {value!r}") from None
    if dims < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {dims}")
    return dims


def add_knn_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=positive_int, default=KnnSettings.k, help="neighbours (default 200)")
    p.add_argument(
        "--temperature", type=positive_float, default=KnnSettings.temperature, help="(default 0.1)"
    )


def add_eval_parser(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """`selfsup eval` and its image-level protocols; returns the protocol sub-parsers, where
    the dense protocols (selfsup.dense, which builds on this package) add theirs."""
    p = commands.add_parser(
        "eval", help="evaluate a representation (linear, knn, finetune, depth, detect)"
    )
    protocols = p.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL")
    lin = protocols.add_parser(
        "linear",
        help="per-layer linear probe on frozen features",
        description="Fit an L2-regularised logistic regression (L-BFGS) on the frozen, "
        "average-pooled, standardised features of every layer; the L2 strength is chosen on a "
        "validation split of --data. Reports test top-1/top-5 per layer.",
    )
    add_common(lin)
    add_linear_options(lin)
    lin.add_argument(
        "--random-init", action="store_true", help="RUN's architecture with random weights"
    )
    lin.add_argument("--json", help=JSON_HELP)
    knn = protocols.add_parser(
        "knn",
        help="weighted kNN on frozen features",
        description="Weighted kNN (cosine similarity, votes exp(sim / T)) on globally pooled "
        "features of the final layer (of a lasso run: its last trained unit), or --layers.",
    )
    add_common(knn)
    add_knn_options(knn)
    knn.add_argument(
        "--random-init", action="store_true", help="RUN's architecture with random weights"
    )
    knn.add_argument("--json", help=JSON_HELP)
    fin = protocols.add_parser(
        "finetune",
        help="fine-tune the whole backbone with a linear head",
        description="Train the supervised task from RUN's backbone (backbone learning rate "
        "scaled by --backbone-lr-scale), then classify the test images.",
    )
    add_common(fin)
    fin.add_argument(
        "--steps", type=positive_int, default=FinetuneSettings.steps, help="training steps"
    )
    fin.add_argument(
        "--lr", type=positive_float, default=FinetuneSettings.lr, help="head learning rate"
    )
    fin.add_argument(
        "--backbone-lr-scale",
        type=non_negative_float,
        default=FinetuneSettings.backbone_scale,
        help="backbone learning rate relative to the head (default 0.1)",
    )
    fin.add_argument("--batch-size", type=positive_int, default=FinetuneSettings.batch_size)
    fin.add_argument("--out", type=output_folder, help="run folder for the fine-tuning run")
    fin.add_argument("--json", help=JSON_HELP)
    return protocols


def add_report_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="table + plot of several runs with random and supervised baselines",
        description="Evaluate every RUN with one protocol (features are cached), add the "
        "random-init and supervised rows of the first run's architecture and budget, and write "
        "report.md, accuracy.png and results.json to --out.",
    )
    add_common(p, multiple=True)
    add_linear_options(p)
    add_knn_options(p)
    p.add_argument("--protocol", choices=("linear", "knn"), default="linear")
    p.add_argument("--no-baselines", action="store_true", help="no random / supervised rows")
    p.add_argument(
        "--out",
        required=True,
        type=output_folder,
        help="report folder (report.md, accuracy.png, results.json)",
    )


def options_from(args: argparse.Namespace):
    from selfsup.eval.protocol import EvalOptions

    cache = None if args.no_cache else (args.cache_dir or default_cache_dir())
    return EvalOptions(device=args.device, cache_dir=cache, progress=not args.quiet)


def load_data(args: argparse.Namespace, spec: str):
    """Decode --data and --test at the size of the run (or --image-size, or 32)."""
    from selfsup.eval.baselines import architecture, split_spec
    from selfsup.eval.protocol import align_classes, load_labelled

    size = args.image_size
    if size is None:
        _, target = split_spec(spec)
        _, run_config = architecture(target)
        size = int(run_config.get("data", {}).get("image_size", 32))
    progress = not args.quiet
    train = load_labelled(args.data, size, progress=progress)
    return train, align_classes(train, load_labelled(args.test, size, progress=progress))


def evaluate(spec: str, protocol: str, args: argparse.Namespace, train, test, options) -> dict:
    """One model, one protocol."""
    from selfsup.eval.baselines import finetune_eval, resolve_model
    from selfsup.eval.protocol import knn_eval, linear_eval

    if protocol == "finetune":
        settings = FinetuneSettings(
            steps=args.steps,
            lr=args.lr,
            backbone_scale=args.backbone_lr_scale,
            batch_size=args.batch_size,
        )
        return finetune_eval(spec, train, test, settings, options, args.out)
    if getattr(args, "random_init", False) and not spec.startswith(("random:", "supervised:")):
        spec = f"random:{spec}"
    baseline = FinetuneSettings(steps=args.baseline_steps)
    loaded = resolve_model(spec, train, test, options, baseline)
    if protocol == "knn":
        settings = KnnSettings(k=args.k, temperature=args.temperature)
        return knn_eval(loaded, train, test, layers=args.layers, settings=settings, options=options)
    settings = ProbeSettings(
        weight_decays=tuple(args.weight_decay),
        steps=args.steps,
        selection_rows=args.selection_rows,
        tolerance=args.tolerance,
    )
    return linear_eval(
        loaded,
        train,
        test,
        layers=args.layers,
        settings=settings,
        max_dims=args.max_dims,
        options=options,
    )


def command_eval(args: argparse.Namespace) -> None:
    from selfsup.eval.report import table

    train, test = load_data(args, args.run)
    result = evaluate(args.run, args.protocol, args, train, test, options_from(args))
    print(table([result]))
    if args.json:
        path = output_file(args.json, "results.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")


def results_file(spec: str) -> Path | None:
    """The saved results `spec` names (an `eval --json` file, or a report folder's
    results.json, by the path their --json / --out was given), or None for a model."""
    from selfsup.config import ConfigError

    if spec.startswith(("random:", "supervised:")) or (Path(spec) / "checkpoints").is_dir():
        return None
    path = input_file(spec, "results.json")
    if path.suffix != ".json":
        return None
    if not path.is_file() and Path(spec).is_dir():
        raise ConfigError(
            f"{spec}: not a run folder (no checkpoints/last.pt) nor saved results (no results.json)"
        )
    if not path.is_file():
        raise ConfigError(
            f"{spec}: no results there (expected the .json `eval --json` wrote, or a report "
            "folder holding results.json)"
        )
    return path


def read_results(path: Path) -> list[dict]:
    """The results in an `eval --json` file (one) or a report's results.json (a list)."""
    from selfsup.config import ConfigError

    try:
        loaded = json.loads(path.read_text())
    except ValueError as err:  # not JSON, or not UTF-8
        raise ConfigError(f"{path}: not valid JSON ({err})") from err
    results = loaded if isinstance(loaded, list) else [loaded]
    needed = {"model", "protocol", "layers"}
    for result in results:
        if not isinstance(result, dict) or not needed <= result.keys():
            raise ConfigError(
                f"{path}: not results of `selfsup eval --json` or `report` (each needs "
                f"{', '.join(sorted(needed))})"
            )
    return results


def command_report(args: argparse.Namespace) -> None:
    from selfsup.eval.report import write_report

    options = options_from(args)
    files = [(spec, results_file(spec)) for spec in args.runs]
    specs = [spec for spec, file in files if file is None]
    saved = []
    for path in (file for _, file in files if file is not None):
        saved.extend(read_results(path))
    results = []
    if specs:
        from selfsup.eval.baselines import split_spec

        train, test = load_data(args, specs[0])
        if not args.no_baselines and split_spec(specs[0])[0] == "run":
            specs += [f"random:{specs[0]}", f"supervised:{specs[0]}"]
        for spec in specs:
            results.append(evaluate(spec, args.protocol, args, train, test, options))
    results += saved  # models evaluated now first, then the saved ones (e.g. baselines)
    with nothing_half_written(args.out):
        markdown = write_report(results, args.out)
    print(markdown)
    print(f"\nwrote {args.out}/report.md, accuracy.png, results.json")
