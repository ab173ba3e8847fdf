"""Sphinx configuration: ``sphinx-build -W -b html docs docs/_build/html``.

tests/run.sh builds the docs with ``-W`` (warnings are errors), so a broken
docstring or a dangling reference fails CI.
"""

from __future__ import annotations

import sys
from pathlib import Path

# autodoc imports the package from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

project = "flask_athena"
author = "flask_athena contributors"
copyright = "flask_athena contributors, MIT license"  # noqa: A001 (Sphinx's name)
release = "0.1.0.dev0"

extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
# Signatures show the annotations as written; names imported only for type
# checking cannot be resolved at build time.
autodoc_typehints = "signature"
autodoc_typehints_format = "short"

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
