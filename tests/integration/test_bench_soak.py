"""The soak keeps running: ``python -m bench --soak`` on a small scale in CI.

Pages come and go (their streams end, their beacons close them), call the
server and get pushes for a quarter of a minute; then every page leaves.
This checks what the soak itself checks, at 300 pages instead of 10,000:
no error (every push once and in order on every page, every call answered,
every close accepted), every page gone from the worker, its greenlets back
where they started and the series written. Not how fast anything is
(TESTING.md: benchmarks are not tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(300)
def test_a_short_soak_ends_where_it_started(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--soak",
            "0.25",
            "--soak-pages",
            "300",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "soak.json").read_text())
    assert result["passed"] and result["errors"] == {}
    assert result["end"]["held"] == 0
    assert result["greenlets_ratio"] <= 1.1
    assert result["last_push"]["reached"] == result["last_push"]["pages"] > 0
    assert result["pushes"] >= 2
    phases = [s["phase"] for s in result["samples"]]
    assert phases[:3] == ["warm-up", "start", "opened"] and phases[-1] == "end"
    # 300 pages were held during the soak, not fewer.
    assert max(s["held"] for s in result["samples"] if s["phase"] == "soak") >= 300
    assert (tmp_path / "soak.png").stat().st_size > 0
