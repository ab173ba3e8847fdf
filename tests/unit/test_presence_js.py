"""The browser helper athena/presence, through Node's own test runner
(tests/js/presence.test.mjs, the same cases as test_presence.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def test_js_presence_helper_passes_its_node_tests() -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js is needed for tests/js (tests/run.sh installs it)"
    done = subprocess.run(
        [node, "--test", "tests/js/presence.test.mjs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
