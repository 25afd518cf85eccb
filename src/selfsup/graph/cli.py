"""`selfsup graph build | stats | show`: the transitive-invariance graph on the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from selfsup.outputs import output_folder

EXAMPLES = """examples:
  selfsup graph build --patches patches/ --embed runs/relpos --out graph.npz
  selfsup graph build --patches patches/ --embed runs/relpos --out graph.npz clusters=200
  selfsup graph build --patches patches/ --embed runs/relpos --out g   # writes g.npz
  selfsup graph stats g --patches patches/
  selfsup graph show graph.npz --patches patches/ --out graph_preview/
"""


GRAPH_HELP = "what `graph build --out` was given: the graph file, or the folder holding it"


def add_graph_parser(commands: argparse._SubParsersAction) -> None:
    graph = commands.add_parser(
        "graph",
        help="build and examine the transitive-invariance graph of video patches",
        description="Nodes are patches (`selfsup video patches`); edges are inter-instance "
        "(4-cliques of within-cluster neighbours), intra-instance (tracks) and transitive.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = graph.add_subparsers(dest="graph_command", required=True, metavar="SUBCOMMAND")
    build = sub.add_parser(
        "build",
        help="embed patches, mine cliques, write the graph",
        description="Embed the patches with a run's backbone, mine 4-cliques and write the "
        "graph, one .npz file, at --out: `g` becomes g.npz, a folder gets graph.npz. Every "
        "command that reads a graph accepts what was given to --out.",
    )
    build.add_argument(
        "--patches",
        required=True,
        help="the `video patches` folder (its shards, read as one patch set), or a patches.npz",
    )
    build.add_argument(
        "--embed",
        required=True,
        help="run whose backbone embeds the patches (e.g. relative-position)",
    )
    build.add_argument(
        "--out", required=True, help="graph file (.npz added when it has no extension) or folder"
    )
    build.add_argument("--quiet", action="store_true", help="no progress bar")
    build.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="clusters=, neighbours=, neighbours_from=other_tracks|other_videos, "
        "index=ivfflat|ivfpq, backend=, layer=, intra=first|all, intra_min_gap=",
    )
    stats = sub.add_parser(
        "stats",
        help="counts per edge type, cliques (and how many join four tracks), the frame gaps "
        "of intra pairs, cluster purity",
    )
    stats.add_argument("graph", help=GRAPH_HELP)
    stats.add_argument("--patches", help="patches the graph was built on (checks the match)")
    show = sub.add_parser("show", help="image grids of sample cliques and transitive chains")
    show.add_argument("graph", help=GRAPH_HELP)
    show.add_argument("--patches", required=True, help="patches the graph was built on")
    show.add_argument(
        "--out", required=True, type=output_folder, help="folder for cliques.jpg and chains.jpg"
    )


def command_build(args: argparse.Namespace) -> None:
    from selfsup.config import build, parse_overrides
    from selfsup.data.patch_graph import load_patches
    from selfsup.graph.build import GraphConfig, build_graph, embed, graph_stats, save_graph

    cfg = build(GraphConfig, parse_overrides(args.overrides))
    patches = load_patches(args.patches)
    features = embed(args.embed, patches.images, cfg.layer, progress=not args.quiet)
    graph = build_graph(patches, features, cfg)
    written = save_graph(graph, args.out)
    print(json.dumps(graph_stats(graph, patches.labels), indent=2))
    print(f"wrote {written}")


def command_stats(args: argparse.Namespace) -> None:
    from selfsup.data.patch_graph import load_graph, load_patches
    from selfsup.graph.build import graph_stats

    patches = load_patches(args.patches) if args.patches else None
    graph = load_graph(args.graph, patches)
    print(json.dumps(graph_stats(graph, patches.labels if patches else None), indent=2))


def command_show(args: argparse.Namespace) -> None:
    from selfsup.data.patch_graph import load_graph, load_patches
    from selfsup.graph.preview import save_previews
    from selfsup.outputs import nothing_half_written

    patches = load_patches(args.patches)
    with nothing_half_written(args.out):
        written = save_previews(load_graph(args.graph, patches), patches, Path(args.out))
    print("wrote " + (", ".join(map(str, written)) or "nothing: the graph has no edges to show"))


def command_graph(args: argparse.Namespace) -> None:
    {"build": command_build, "stats": command_stats, "show": command_show}[args.graph_command](args)
