"""`Sizes`: how much work each section does, one column of the table in sizes.yaml (a row per
size, a column per profile: quick, cpu and gpu). A script reads one profile:
`PROFILES["quick"]` with --quick, else its own."""

from __future__ import annotations

from dataclasses import make_dataclass
from pathlib import Path

import yaml

PROFILE_NAMES = ("quick", "cpu", "gpu")
TABLE: dict[str, list] = yaml.safe_load(Path(__file__).with_name("sizes.yaml").read_text())

Sizes = make_dataclass("Sizes", list(TABLE), frozen=True)
Sizes.__doc__ = "How much work each section does: one column of sizes.yaml."


def frozen(value):
    """Lists as tuples: sizes are constants, as their frozen dataclass is."""
    return tuple(value) if isinstance(value, list) else value


PROFILES = {
    name: Sizes(**{size: frozen(row[column]) for size, row in TABLE.items()})
    for column, name in enumerate(PROFILE_NAMES)
}
