"""The benchmark suite must keep running: ``python -m bench --quick`` as CI's smoke test.

This checks that every figure is produced for every available target, never
how fast anything is (timing claims live in bench/README.md, see TESTING.md:
"Benchmarks are not tests").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

FIGURES = ["F1", "F2", "F3", "F4", "F5", "F6", "F7"]

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_bench_quick_writes_every_figure_for_every_available_target(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    results = json.loads((out / "results.json").read_text())
    available = {n: t for n, t in results["targets"].items() if t["available"]}
    assert {"bare", "raw", "socketio", "athena"} <= set(available)
    for name, target in results["targets"].items():
        if not target["available"]:
            assert target["reason"], f"{name} is unavailable without a reason"
            continue
        for figure in FIGURES:
            entry = target["figures"].get(figure)
            assert isinstance(entry, dict), f"{name}: {figure} missing"
            assert "error" not in entry, f"{name} {figure}: {entry.get('error')}"

    # The floor of the calls path answered every call (bench/apps/bare_app.py).
    assert available["bare"]["figures"]["F4"]["errors"] == 0
    assert available["bare"]["figures"]["F4"]["calls_per_s"] > 0
    athena = available["athena"]["figures"]
    assert athena["F1"]["zero_failures"], athena["F1"]
    assert athena["F2"]["missing"] == 0
    assert athena["F3"]["complete"]
    assert athena["F4"]["errors"] == 0
    assert athena["F5"]["errors"] == 0
    assert athena["F6"]["missing"] == 0
    for name, target in available.items():
        f7 = target["figures"]["F7"]
        if f7.get("supported") is False:
            continue
        # Redis targets: the driver reached every worker's pages (bench/apps/cluster.py).
        figures = target["figures"]
        assert f7["workers"] == target["workers"], (name, f7)
        assert sum(f7["pages_per_worker"]) == figures["F2"]["pages"], (name, f7)
        assert figures["F5"]["errors"] == 0, (name, figures["F5"])
        assert figures["F6"]["missing"] == 0, (name, figures["F6"])
    assert results["goals"], "no goal was evaluated"
    for png in (
        "f1_idle_pages.png",
        "f2_fanout.png",
        "f3_sustained_push.png",
        "f4_browser_calls.png",
        "f5_server_calls.png",
        "f6_replay.png",
    ):
        assert (out / png).stat().st_size > 0, png
    assert "F3 sustained push" in proc.stdout  # the table was printed
