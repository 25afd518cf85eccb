"""What every page uses: the repository's paths and small Markdown helpers."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
NOT_MEASURED = "not measured yet"


def cell(text: Any) -> str:
    """A table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def md_table(header: list[str], rows: list[list[Any]], align: str = "") -> str:
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def yaml_value(value: Any) -> str:
    import yaml

    return (
        yaml.safe_dump(value, default_flow_style=True, width=1000)
        .strip()
        .removesuffix("...")
        .strip()
    )


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list) and len(value) > 8:
        return [(prefix, f"[{len(value)} items]")]
    return [(prefix, value)]


def notes(name: str, folder: Path = RESULTS) -> str:
    """The hand-written notes on a page's runs (`readings/NAME.md` beside the JSON) as the
    page's last section, or "" when there are none."""
    path = folder / "readings" / f"{name}.md"
    if not path.is_file():
        return ""
    text = re.sub(r"<!--.*?-->\s*", "", path.read_text(), flags=re.S).strip()
    return (
        "\n## Notes on these runs\n\nWritten by hand when the runs were made, from the same "
        f"results (`bench/results/readings/{name}.md`).\n\n{text}\n"
    )
