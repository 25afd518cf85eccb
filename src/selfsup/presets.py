"""Configs that ship inside the package (selfsup/configs/*.yaml), named by their file stem.

`--config` takes a preset name (`counting_small`) or a path to a YAML file; a file that
exists wins, so a local file never loses to a preset of the same name. `selfsup list configs`
lists the presets with the first sentence of each file's header comment.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import yaml

from selfsup.config import ConfigError


def preset_folder() -> Path:
    # setuptools installs packages as plain folders, so the resource is a real path.
    return Path(str(resources.files("selfsup") / "configs"))


def preset_files() -> dict[str, Path]:
    return {path.stem: path for path in sorted(preset_folder().glob("*.yaml"))}


def describe(path: Path) -> tuple[str, str]:
    """(task, first sentence of the header comment) of a preset file."""
    text = path.read_text()
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# ").strip())
    sentence = re.split(r"\.\s+(?=[A-Z])", " ".join(header), maxsplit=1)[0].rstrip(".")
    task = (yaml.safe_load(text) or {}).get("task", "")
    return task, sentence


def config_file(spec: str) -> Path:
    """The YAML file `--config SPEC` names: an existing file, else a preset."""
    path = Path(spec)
    if path.is_file():
        return path
    presets = preset_files()
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if str(path.parent) == "." and name in presets:
        return presets[name]
    raise ConfigError(
        f"--config {spec}: no such file, and not a preset name (presets: "
        f"{', '.join(presets)}; see `selfsup list configs`)"
    )
