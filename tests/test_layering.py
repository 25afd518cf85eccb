"""The packages of selfsup import only downward: no import cycle between them, counting the
imports inside functions too (a deferred import hides a cycle from Python, not from a
reader)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def unit(module: str) -> str:
    """`selfsup.eval.linear` -> `selfsup.eval`: packages and top-level modules are the units."""
    return ".".join(module.split(".")[:2])


def is_unit(name: str) -> bool:
    path = SRC / name.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def imports_between_units() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in (SRC / "selfsup").rglob("*.py"):
        module = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        source = unit(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                target = unit(name)
                if name.startswith("selfsup.") and is_unit(target) and target != source:
                    graph.setdefault(source, set()).add(target)
    return graph


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


def test_packages_import_only_downward():
    graph = imports_between_units()
    assert "selfsup.runs" in graph and "selfsup.export" in graph  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_deferred_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None


def test_the_command_line_answers_help_without_importing_torch():
    """`selfsup --version` and every `--help` answer at once: the parsers read their defaults
    and choices from modules that do not import torch (importing it takes seconds)."""
    commands = ["train", "eval", "report", "inspect", "export", "embed", "video", "graph"]
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
