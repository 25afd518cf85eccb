"""selfsup imports only downward: no import cycle between its modules, counting the imports
inside functions too (a deferred import hides a cycle from Python, not from a reader), and no
unit (package or top-level module) imports from a layer above its own."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# The layers of the README's layout, lowest first. A unit (a package or a top-level module)
# imports only from its own layer or below; the tools of one layer may use each other (the
# dense protocols use evaluation's) as long as no cycle forms.
LAYERS = {
    "foundation": {
        "config",
        "outputs",
        "dist",
        "metrics",
        "runtime",
        "checkpoint",
        "presets",
        "arguments",
        "precision",
    },
    "data and models": {"data", "backbones"},
    "what tools share": {"runs", "features"},
    "tasks": {"tasks"},
    "the loop": {"train", "resume"},
    "tools": {"eval", "dense", "export", "analysis", "graph", "video", "demo", "estimate", "api"},
    "command line": {"cli", "__main__"},
}


def all_modules() -> dict[str, Path]:
    """`selfsup.eval.linear` -> its file, for every module (a package is its __init__)."""
    modules = {}
    for path in (SRC / "selfsup").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    return modules


def imported_names(path: Path) -> list[str]:
    """Every absolute `selfsup...` name a module imports, inside functions too."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return [name for name in names if name.startswith("selfsup.")]


def imports_between_modules() -> dict[str, set[str]]:
    """module -> the modules it imports (`from selfsup.data.views import MEAN` and
    `from selfsup.data import views` both import `selfsup.data.views`)."""
    modules = all_modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        for name in imported_names(path):
            while name not in modules:
                name = name.rpartition(".")[0]
            if name != module:
                graph.setdefault(module, set()).add(name)
    return graph


def unit(module: str) -> str:
    """`selfsup.eval.linear` -> `eval`: packages and top-level modules are the units."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "selfsup"


def layer_of(module: str) -> int:
    found = [i for i, units in enumerate(LAYERS.values()) if unit(module) in units]
    assert found, f"{module}: its unit {unit(module)} is in no layer of LAYERS"
    return found[0]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        trail.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_imports_itself_through_others():
    graph = imports_between_modules()
    assert "selfsup.video.segment" in graph["selfsup.video.masks"]  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_units_import_only_their_own_layer_or_below():
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in imports_between_modules().items()
        if source != "selfsup"
        for target in targets
        if target != "selfsup" and layer_of(target) > layer_of(source)
    )
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_cycle_finder_finds_a_deferred_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_the_command_line_answers_help_without_importing_torch():
    """`selfsup --version` and every `--help` answer at once: the parsers read their defaults
    and choices from modules that do not import torch (importing it takes seconds)."""
    commands = ["train", "eval", "report", "inspect", "export", "embed", "video", "graph", "data"]
    script = (
        "import sys\n"
        "from selfsup.cli import build_parser\n"
        f"for argv in [['--version']] + [[c, '--help'] for c in {commands!r}]:\n"
        "    try:\n"
        "        build_parser().parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'cv2') if m in sys.modules)\n"
        "print(','.join(heavy), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=True,
    )
    assert done.stderr.strip() == "", f"the parsers imported {done.stderr.strip()}"
