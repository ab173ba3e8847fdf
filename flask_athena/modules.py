"""Where the browser loads each JS module from: registered URLs and files."""

from __future__ import annotations

import os


class JSModules:
    """The modules registered with :meth:`Athena.register_module`.

    One table per :class:`~flask_athena.Athena` object, shared by every app
    it serves. Read while pages render; written at setup.
    """

    __slots__ = ("urls", "paths")

    def __init__(self) -> None:
        #: module name -> URL it is served from.
        self.urls: dict[str, str] = {}
        #: module name -> file path, for modules the blueprint serves.
        self.paths: dict[str, str] = {}

    def register(self, name: str, url_or_path: str) -> None:
        """Serve module ``name`` from a URL, or from a file (a value naming an existing file)."""
        if not name or "/" in name or name == "athena":
            raise ValueError(f"bad module name {name!r}")
        if os.path.isfile(url_or_path):
            self.paths[name] = os.path.abspath(url_or_path)
            self.urls.pop(name, None)
        else:
            self.urls[name] = url_or_path
            self.paths.pop(name, None)

    def names(self) -> set[str]:
        """Every registered module name (they are in every page's import map)."""
        return set(self.urls) | set(self.paths)
