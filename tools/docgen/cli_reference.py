"""`reference/cli.md`: generated from the argument parser, walking every subcommand."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from .pages import md_table


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of every subcommand of `parser`, in definition order."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


def option_rows(parser: argparse.ArgumentParser) -> list[list[str]]:
    rows = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        if action.option_strings:
            name = ", ".join(f"`{s}`" for s in action.option_strings)
            if action.nargs != 0:
                metavar = action.metavar or action.dest.upper()
                name += f" `{metavar}`" + (" ..." if action.nargs in ("+", "*") else "")
        else:
            name = f"`{action.metavar or action.dest}`" + (
                " ..." if action.nargs in ("+", "*") else ""
            )
        notes = []
        if action.required and action.option_strings:
            notes.append("required")
        if action.choices is not None and not isinstance(action.choices, dict):
            notes.append("one of " + ", ".join(f"`{c}`" for c in action.choices))
        default = action.default
        if action.option_strings and action.nargs != 0 and default not in (None, [], ""):
            shown = " ".join(map(str, default)) if isinstance(default, list | tuple) else default
            notes.append(f"default `{shown}`")
        rows.append([name, action.help or "", "; ".join(notes)])
    return rows


@contextlib.contextmanager
def terminal_width(columns: int) -> Iterator[None]:
    """argparse wraps usage lines at $COLUMNS: fix it so the page does not depend on the shell."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(columns)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def command_section(prog: str, parser: argparse.ArgumentParser, summary: str, level: int) -> str:
    parts = [f"{'#' * level} `{prog}`"]
    if summary:
        parts.append(summary[0].upper() + summary[1:] + ".")
    if parser.description and parser.description != summary:
        parts.append(parser.description)
    parts.append("```text\n" + parser.format_usage().strip() + "\n```")
    rows = option_rows(parser)
    if rows:
        parts.append(md_table(["argument", "help", "notes"], rows))
    if parser.epilog:
        parts.append("```text\n" + parser.epilog.strip() + "\n```")
    out = ["\n\n".join(parts)]
    for name, help_text, sub in subcommands(parser):
        out.append(command_section(f"{prog} {name}", sub, help_text, min(level + 1, 4)))
    return "\n\n".join(out)


def cli_reference() -> str:
    from selfsup.cli import build_parser

    with terminal_width(100):
        parser = build_parser()
        top = [
            "# Command line",
            "Generated from the argument parser (`selfsup.cli.build_parser()`) at every docs "
            "build; `selfsup COMMAND --help` prints the same. Arguments of the form "
            "`key=value` are config overrides (see [Configuration keys](config.md)).",
            md_table(
                ["command", "what it does"],
                [[f"[`selfsup {n}`](#selfsup-{n})", h] for n, h, _ in subcommands(parser)],
            ),
            "```text\n" + parser.format_help().strip() + "\n```",
        ]
        sections = [
            command_section(f"selfsup {name}", sub, help_text, 2)
            for name, help_text, sub in subcommands(parser)
        ]
    return "\n\n".join(top + sections) + "\n"
