"""`selfsup export` and `selfsup embed`: arguments and what they run."""

from __future__ import annotations

import argparse

from selfsup.arguments import non_negative_int, positive_int

RUN_HELP = (
    "run folder, checkpoint file, safetensors export (what `export --out` was given), or "
    "random:<backbone>"
)


def add_export_parser(commands: argparse._SubParsersAction) -> None:
    from selfsup.export import FORMATS

    p = commands.add_parser(
        "export",
        help="write a run's backbone alone (safetensors, torchscript, onnx, torchvision)",
        description="Write the backbone of RUN, without the pretext head, to one file at "
        "--out (the format's extension, .safetensors, .pt, .onnx or .pth, is added when --out "
        "has none; a folder gets backbone.<ext>), and its preprocessing (input size, mean/std, "
        "colour mode, layer names) beside it, with '.json' appended, so it can be used without "
        "selfsup. A safetensors export reads back wherever selfsup takes a RUN, by the path "
        "given to --out. safetensors holds weights only (safe to open); "
        "torchscript and onnx hold the graph too; torchvision writes torchvision.models."
        "alexnet names (alexnet_torchvision runs only).",
    )
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    p.add_argument("--format", required=True, choices=FORMATS, help="file format")
    p.add_argument("--out", required=True, help="model file, e.g. backbone.onnx, or folder")


def command_export(args: argparse.Namespace) -> None:
    from selfsup.export.formats import EXTENSIONS, export_backbone
    from selfsup.outputs import nothing_half_written, output_file
    from selfsup.runs import load_backbone, sidecar_path

    loaded = load_backbone(args.run)
    target = output_file(args.out, f"backbone{EXTENSIONS[args.format]}")
    with nothing_half_written(target), nothing_half_written(sidecar_path(target)):
        model, sidecar = export_backbone(loaded, args.format, args.out)
    print(f"wrote {model} ({args.format}, {loaded.name} at step {loaded.step}) and {sidecar}")


def add_embed_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "embed",
        help="features of your own images, to an .npz",
        description="Average-pooled features of one layer for every image in IMAGES (folders, "
        ".npz files or image files), decoded like training data (shorter side to --size, "
        "centre crop). Writes `features` (N, D) float32, `names` (N,), `layer` and `skipped` "
        "(images that could not be decoded) to --out.",
    )
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    p.add_argument("images", nargs="+", metavar="IMAGES", help="folders, .npz or image files")
    p.add_argument("--out", required=True, help="output .npz (.npz added when missing), or folder")
    p.add_argument(
        "--layer",
        help="layer to read (default: the final layer; of a multi-task lasso run, its last "
        "trained unit); a lasso run also has lasso:<task>",
    )
    p.add_argument(
        "--size", type=positive_int, help="image side in px (default: the run's image_size)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per forward (default 64)"
    )
    p.add_argument(
        "--max-dims",
        type=non_negative_int,
        default=0,
        help="0 (default): global average pool, one value per channel; N: pool to the largest "
        "grid with at most N values, as the linear probes do (they use 4096)",
    )
    p.add_argument(
        "--workers", type=non_negative_int, default=2, help="decoding processes (default 2)"
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def command_embed(args: argparse.Namespace) -> None:
    from selfsup.export.embed import embed_source, open_images, save_embeddings
    from selfsup.export.formats import ExportError
    from selfsup.export.preprocessing import input_size
    from selfsup.outputs import output_file
    from selfsup.runs import load_backbone
    from selfsup.runtime import resolve_device

    loaded = load_backbone(args.run)
    # The deepest layer that trained by default (a lasso run's `final` never did); a lasso
    # run's `lasso:<task>` through its readout.
    layer = args.layer or loaded.final_layer
    try:
        backbone = loaded.reader([layer], flag="--layer")
    except ValueError as err:
        raise ExportError(f"--layer: {loaded.name} has no usable layer {layer!r}: {err}") from err
    size = args.size or input_size(loaded)
    if size < backbone.min_input_size:
        raise ExportError(f"--size: this backbone needs at least {backbone.min_input_size} px")
    embeddings = embed_source(
        backbone,
        open_images(args.images),
        layer=layer,
        size=size,
        trunk_input=loaded.input,
        batch_size=args.batch_size,
        max_dims=args.max_dims,
        workers=args.workers,
        device=resolve_device(args.device),
        progress=not args.quiet,
    )
    out = save_embeddings(embeddings, output_file(args.out, "features.npz"))
    rows, dims = embeddings.features.shape
    print(f"wrote {out}: {rows} images x {dims} features of {layer} at {size} px")
    if embeddings.skipped:
        print(f"skipped {len(embeddings.skipped)} unreadable images, e.g. {embeddings.skipped[0]}")
