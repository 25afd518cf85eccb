"""The report page: sections of text, tables and figures, written as one HTML file.

Figures are PNG files beside `report.html`, referenced by relative paths, so the folder can be
moved or zipped as a whole and opened in any browser without a server.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
td, th { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: .9em; }
img { max-width: 100%; image-rendering: pixelated; }
nav a { margin-right: 1em; } .note { color: #666; }
"""


@dataclass
class Section:
    """One part of the report: an anchor id, a heading, and HTML blocks in order."""

    id: str
    title: str
    blocks: list[str] = field(default_factory=list)

    def text(self, words: str, note: bool = False) -> Section:
        css = ' class="note"' if note else ""
        self.blocks.append(f"<p{css}>{html.escape(words)}</p>")
        return self

    def figure(self, file_name: str, caption: str) -> Section:
        src, alt = html.escape(file_name, quote=True), html.escape(caption, quote=True)
        self.blocks.append(
            f'<figure><img src="{src}" alt="{alt}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Section:
        """A table; an empty `header` gives a table without a header row."""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        self.blocks.append(f"<table>{f'<tr>{head}</tr>' if head else ''}{body}</table>")
        return self


def _cell(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_page(title: str, sections: Sequence[Section], path: Path) -> Path:
    """Write the page with a table of contents; returns `path`."""
    nav = " ".join(f'<a href="#{s.id}">{html.escape(s.title)}</a>' for s in sections)
    parts = [
        f'<section id="{s.id}"><h2>{html.escape(s.title)}</h2>{"".join(s.blocks)}</section>'
        for s in sections
    ]
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>{''.join(parts)}</body></html>\n"
    )
    path.write_text(page, encoding="utf-8")
    return path
