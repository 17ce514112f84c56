"""Sphinx extension: the ``trio-micro-cli`` directive, the CLI reference generated from the
argparse parsers (``trio_micro.cli._main.build_parser``).

Why not sphinx-argparse: it needs a module-level parser object and renders each argparse
group through its own layout; ours are built per command (``build_parser(command)``), and the
``--help`` text, epilog (exit codes) included, is the reference users already read in their
terminal. So each command gets a section with its ``--help`` as a literal block, rendered at
a fixed width so the build does not depend on the terminal that runs it, and a section per
sub-command (``registry serve``) the same way. A command added to the CLI appears here with
no edit to the docs.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

WIDTH = 100


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(parser: argparse.ArgumentParser) -> str:
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(WIDTH)  # argparse reads the width from $COLUMNS
    try:
        return parser.format_help()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


class CliReference(SphinxDirective):
    """``.. trio-micro-cli::``: one section per command and sub-command."""

    has_content = False

    def _section(self, name: str, parser: argparse.ArgumentParser) -> nodes.section:
        section = nodes.section(ids=[nodes.make_id(name)], names=[nodes.fully_normalize_name(name)])
        section += nodes.title(text=name)
        text = _help(parser)
        section += nodes.literal_block(text, text, language="text")
        for sub, subparser in _subcommands(parser).items():
            section += self._section(f"{name} {sub}", subparser)
        return section

    def run(self) -> list[nodes.Node]:
        os.environ.setdefault("NO_COLOR", "1")  # Python 3.14's argparse colours help
        from trio_micro.cli._main import build_parser

        root = build_parser()
        text = _help(root)
        result: list[nodes.Node] = [nodes.literal_block(text, text, language="text")]
        for name, parser in _subcommands(root).items():
            result.append(self._section(f"trio-micro {name}", parser))
        return result


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("trio-micro-cli", CliReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
