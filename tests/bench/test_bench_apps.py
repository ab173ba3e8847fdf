"""The ``bare`` target's WSGI app and the report's rows for it and for F1.

``bench/apps/bare_app.py`` is the floor of the calls figure (F4): it must
answer the load client's ``echo`` call like the raw app does, and refuse
what it cannot answer with a JSON 4xx. The report must show a target that
has no stream as *n/s* in F1, and the push to all pages at each level.
"""

from __future__ import annotations

import json

from werkzeug.test import Client

from bench import report
from bench.apps.bare_app import app


def post(body: bytes | str, path: str = "/call") -> tuple[int, object]:
    response = Client(app).post(path, data=body, content_type="application/json")
    return response.status_code, json.loads(response.get_data())


def test_bare_app_echoes_a_call() -> None:
    assert post(json.dumps({"method": "echo", "args": [{"a": [1, "é"]}]})) == (
        200,
        {"ok": {"a": [1, "é"]}},
    )


def test_bare_app_refuses_what_it_cannot_answer() -> None:
    assert post(b"{nope")[0] == 400
    assert post(json.dumps({"method": "echo"}))[0] == 400
    assert post(json.dumps({"method": "other", "args": [1]}))[0] == 404
    assert post(b"{}", path="/elsewhere")[0] == 404
    assert Client(app).get("/healthz").status_code == 200


def test_report_rows_for_bare_and_f1_push_levels() -> None:
    results = {
        "params": {"levels": [1000, 19000], "push_levels": [19000], "mode": "full"},
        "targets": {
            "bare": {
                "label": "bare WSGI",
                "available": True,
                "figures": {
                    "F1": {"supported": False, "reason": "no stream"},
                    "F4": {"calls_per_s": 2000.0, "cpu_us_per_call": 300.0},
                },
            },
            "athena": {
                "label": "flask_athena",
                "available": True,
                "figures": {
                    "F1": {
                        "max_held": 19000,
                        "levels": [
                            {"level": 1000, "held": 1000, "failures": 0, "rss_per_page_kib": 20},
                            {
                                "level": 19000,
                                "held": 19000,
                                "failures": 0,
                                "rss_per_page_kib": 19.5,
                                "push": {"pages": 19000, "reached": 18990, "last_ms": 600.0},
                            },
                        ],
                        "push_to_all": {"pages": 19000, "reached": 18990, "last_ms": 600.0},
                    },
                    "F4": {"calls_per_s": 1000.0, "cpu_us_per_call": 600.0},
                },
            },
            "athena-baseline": {
                "label": "flask_athena @abc",
                "available": True,
                "figures": {"F4": {"calls_per_s": 800.0}},
            },
        },
    }
    table = report.render_table(results)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if "|" in line}
    assert "flask_athena @abc" in table.splitlines()[0]  # --baseline's column
    assert "n/s" in rows["F1 RSS KiB/page @ 19,000"].split("|")[2]
    assert "10 missed" in rows["F1 one push to all @ 19,000, ms"]
    goals = {g["goal"]: g for g in report.evaluate_goals(results)}
    assert goals["calls/s at c=100 >= 0.9x bare WSGI"]["measured"] == 0.5
    assert goals["calls/s at c=100 >= 0.9x bare WSGI"]["status"] == "missed"
