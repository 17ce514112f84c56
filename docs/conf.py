"""Sphinx configuration of the trio_micro docs site (``make docs``).

The pages are the Markdown files of this directory (MyST), the README as the index page, the
API reference from the docstrings (autodoc over the public packages, sphinxcontrib-trio for
async signatures) and the CLI reference, generated from the argparse parsers by the local
extension ``_ext/cli_reference.py``. ``make docs`` builds it with ``-W`` (warnings are errors)
into ``docs/_build/`` (git-ignored).

Nothing is downloaded while building: no intersphinx (CI reaches package registries only),
so references to Trio, msgspec and the standard library are plain text, not links.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

from trio_micro import __version__  # noqa: E402

project = "trio_micro"
author = "trio_micro developers"
copyright = "trio_micro developers"  # noqa: A001 (Sphinx's name)
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxcontrib_trio",
    "cli_reference",
    "repo_links",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]
templates_path: list[str] = []

# MyST: `#heading` links in the Markdown pages resolve to the headings' anchors.
myst_heading_anchors = 4
myst_enable_extensions = ["deflist"]

# autodoc: members in source order, signatures with their annotations as written.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
napoleon_use_ivar = True  # "Attributes:" as fields: no duplicate of the members autodoc lists

# The API names types from Trio, msgspec, structlog and the standard library; without
# intersphinx they can't be links, and Sphinx would warn on each: say them as text.
nitpicky = False
default_role = "code"

html_theme = "alabaster"
html_title = f"trio_micro {release}"
html_static_path: list[str] = []
html_theme_options = {"description": "High-concurrency microservices on Trio"}
