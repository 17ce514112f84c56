"""Sphinx extension: the repository's relative links work on the docs site too.

The README (the site's index page, included from ``index.md``) and the pages under
``docs/`` link to files by their path in the repository: ``docs/rpc.md``,
``benchmarks/RESULTS.md``, ``../examples/mtls_authz.py``. On GitHub those work as they are;
in the site, a link to a page becomes a link to that page, and a link to a file the site does
not hold (source, a lock file, a directory) becomes its path as literal text, so no link is
ever dead. Applied to the pages (``source-read``) and to included files (``include-read``).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from sphinx.application import Sphinx

#: Repository files that are pages of the site (other than docs/*.md): path -> page name.
PAGES = {"CHANGELOG.md": "changelog", "benchmarks/RESULTS.md": "results", "README.md": "index"}

_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")


def _rewrite(text: str, source_dir: PurePosixPath, docs: Path) -> str:
    """Rewrite the repository-relative links of Markdown ``text`` whose file lives in
    ``source_dir`` (a path relative to the repository root)."""

    def replace(match: re.Match[str]) -> str:
        target = match["target"]
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#", target):  # a URL or an anchor: as it is
            return match[0]
        path, _, anchor = target.partition("#")
        parts: list[str] = []
        for part in (source_dir / path).parts:  # normalise `..` lexically
            if part == "..":
                parts.pop() if parts else None
            elif part != ".":
                parts.append(part)
        repo_path = "/".join(parts)
        page = PAGES.get(repo_path)
        if page is None and repo_path.startswith("docs/") and repo_path.endswith(".md"):
            page = repo_path[len("docs/") : -len(".md")]
        if page is not None and (docs / f"{page}.md").exists():
            suffix = f"#{anchor}" if anchor else ""
            return f"[{match['text']}](/{page}.md{suffix})"
        return f"{match['text']} (`{repo_path}` in the repository)"

    return _LINK.sub(replace, text)


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    source_dir = PurePosixPath("docs", docname).parent
    source[0] = _rewrite(source[0], source_dir, Path(app.srcdir))


def _include_read(
    app: Sphinx, relative_path: Path, parent_docname: str, content: list[str]
) -> None:
    repo = Path(app.srcdir).parent
    source = (Path(app.srcdir) / relative_path).resolve()
    try:
        source_dir = PurePosixPath(source.relative_to(repo).parent.as_posix())
    except ValueError:
        return
    if source.suffix == ".md":
        content[0] = _rewrite(content[0], source_dir, Path(app.srcdir))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("source-read", _source_read)
    app.connect("include-read", _include_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
