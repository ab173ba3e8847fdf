"""nox sessions: the unit tests against the oldest Flask flask_athena supports and the latest.

    nox                                  # both
    nox -s "unit(flask='oldest')"        # one; arguments after -- go to pytest

"oldest" pins the floors setup.py declares (``flask>=2.3`` and the Werkzeug
it needs); "latest" takes what PyPI has today. tests/run.sh runs the oldest
(CI's own virtualenv already is the latest). The Python is the one nox runs
under: CI has 3.11, the floor of ``python_requires``.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True  # a second run reinstalls nothing new

#: What each end of the supported range installs on top of the package.
FLASK = {
    "oldest": ["flask==2.3.0", "werkzeug==2.3.0"],
    "latest": ["flask", "werkzeug"],
}


#: The test extra without what tests/unit never imports (playwright, gunicorn:
#: the largest downloads of a fresh virtualenv).
UNIT_DEPS = ["pytest>=8", "pytest-timeout>=2.2", "hypothesis>=6.100", "requests>=2.31"]


@nox.session
@nox.parametrize("flask", list(FLASK))
def unit(session: nox.Session, flask: str) -> None:
    """tests/unit (no sockets, no browsers) with that end's Flask and Werkzeug."""
    session.install("-e", ".[redis,metrics]", *UNIT_DEPS)
    session.install("--upgrade", *FLASK[flask])
    session.run("python", "-m", "pip", "list", "--format=freeze", silent=False)
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/unit",
                *session.posargs)  # fmt: skip
