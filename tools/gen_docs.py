"""The documentation pages generated from the code and from measured results.

Nothing here is written by hand twice: the CLI reference comes from `selfsup.cli.build_parser()`,
the config reference from the config dataclasses (`selfsup.config.field_docs`), the results
pages from `bench/results/*.json` (and the PNG plots beside them), and each method page's
figure is drawn here with matplotlib.

Two ways to use it:

- as an MkDocs hook (`hooks:` in mkdocs.yml): every `mkdocs build` / `mkdocs serve` adds the
  generated pages to the site in memory (nothing is written into docs/), and replaces each
  `<!-- results: KEY -->` line of a hand-written page with the measured-vs-reported block of
  KEY, so the site cannot drift from the code or from what was measured;
- as a script, to look at the generated Markdown: `python tools/gen_docs.py --out DIR`.

The pages come from the docgen package beside this file, one module per page family; this file
puts them together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: the docgen package
# `mkdocs serve` runs this file again at every rebuild: forget docgen's modules, so that edits
# to them show in the next build as edits to this file do.
for name in [name for name in sys.modules if name.split(".")[0] == "docgen"]:
    del sys.modules[name]

from docgen.cli_reference import cli_reference  # noqa: E402
from docgen.config_reference import config_reference  # noqa: E402
from docgen.figures import figures  # noqa: E402
from docgen.method_blocks import fill_results, results_block  # noqa: E402
from docgen.results import results_pages  # noqa: E402
from docgen.results_data import load_results  # noqa: E402

# What tests and scripts use besides the hooks.
__all__ = ["fill_results", "generated_pages", "load_results", "results_block", "results_pages"]


def generated_pages() -> dict[str, str | bytes]:
    """Site path (relative to docs/) -> content of every generated file."""
    return {
        "reference/cli.md": cli_reference(),
        "reference/config.md": config_reference(),
        **results_pages(),
        **figures(),
    }


def on_files(files, config):  # MkDocs hook
    from mkdocs.structure.files import File

    for path, content in generated_pages().items():
        existing = files.get_file_from_path(path)
        if existing is not None:
            files.remove(existing)
        files.append(File.generated(config, path, content=content))
    return files


def on_page_markdown(markdown, page, config, files):  # MkDocs hook
    return fill_results(markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the generated documentation pages.")
    parser.add_argument("--out", type=Path, required=True, help="folder to write them into")
    args = parser.parse_args()
    for path, content in generated_pages().items():
        target = args.out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
