"""The table, the goals (ratios between targets) and the PNG plots."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .targets import BY_NAME, TARGETS, Target

Results = dict[str, Any]


def _get(results: Results, target: str, figure: str, key: str) -> float | None:
    entry = results["targets"].get(target, {})
    value = entry.get("figures", {}).get(figure, {}).get(key)
    return value if isinstance(value, (int, float)) else None


def f1_common(results: Results, a: str, b: str) -> tuple[float | None, float | None, Any]:
    """RSS per page of ``a`` and ``b`` at the largest level both held cleanly."""

    def clean(name: str) -> dict[int, float]:
        f1 = results["targets"].get(name, {}).get("figures", {}).get("F1", {})
        return {
            lv["level"]: lv["rss_per_page_kib"]
            for lv in f1.get("levels", [])
            if "held" in lv and not lv["failures"]
        }

    ca, cb = clean(a), clean(b)
    common = sorted(set(ca) & set(cb))
    if not common:
        return None, None, None
    level = common[-1]
    return ca[level], cb[level], level


@dataclass(frozen=True)
class Goal:
    """``subject`` figure compared with ``reference``'s (or an absolute limit)."""

    text: str
    figure: str
    key: str
    op: str  #: "<=", ">=" or "<"
    limit: float
    reference: str | None = None
    subject: str = "athena"

    def evaluate(self, results: Results) -> dict[str, Any]:
        out: dict[str, Any] = {
            "goal": self.text,
            "subject": self.subject,
            "reference": self.reference,
            "op": self.op,
            "limit": self.limit,
        }
        if self.figure == "F1":
            value, ref, level = f1_common(results, self.subject, self.reference or "")
            out["level"] = level
        else:
            value = _get(results, self.subject, self.figure, self.key)
            ref = _get(results, self.reference, self.figure, self.key) if self.reference else None
        out["value"] = value
        out["reference_value"] = ref
        if value is None or (self.reference and not ref):
            out["status"] = "n/a"
            return out
        measured = value / ref if self.reference and ref else value
        out["measured"] = measured
        met = {
            "<=": measured <= self.limit,
            ">=": measured >= self.limit,
            "<": measured < self.limit,
        }[self.op]
        out["status"] = "met" if met else "missed"
        return out


GOALS = [
    Goal("RSS per idle page <= 1.05x raw", "F1", "rss_per_page_kib", "<=", 1.05, "raw"),
    Goal(
        "RSS per idle page <= 0.5x Flask-SocketIO", "F1", "rss_per_page_kib", "<=", 0.5, "socketio"
    ),
    Goal("fan-out time (median) <= 1.1x raw", "F2", "median_ms", "<=", 1.1, "raw"),
    Goal("fan-out time (p99) <= 1.1x raw", "F2", "p99_ms", "<=", 1.1, "raw"),
    Goal("sustained push >= 1.0x raw", "F3", "deliveries_per_s", ">=", 1.0, "raw"),
    Goal("sustained push >= 1.3x Flask-SocketIO", "F3", "deliveries_per_s", ">=", 1.3, "socketio"),
    Goal(
        "sustained push CPU/delivery <= 1.05x raw", "F3", "cpu_us_per_delivery", "<=", 1.05, "raw"
    ),
    Goal(
        "sustained push with Redis (1 worker) >= 0.7x memory mode",
        "F3",
        "deliveries_per_s",
        ">=",
        0.7,
        "athena",
        subject="athena-redis-1w",
    ),
    Goal("calls/s at c=100 >= Flask-SocketIO", "F4", "calls_per_s", ">=", 1.0, "socketio"),
    Goal("calls/s at c=100 >= 0.9x bare WSGI", "F4", "calls_per_s", ">=", 0.9, "bare"),
    Goal("calls/s at c=100 >= raw", "F4", "calls_per_s", ">=", 1.0, "raw"),
    Goal(
        "server->browser round trips/s >= 1.2x Flask-SocketIO",
        "F5",
        "round_trips_per_s",
        ">=",
        1.2,
        "socketio",
    ),
    Goal("replay of 1,000 messages (median) < 50 ms", "F6", "median_ms", "<", 50.0),
]


def measured_targets(results: Results) -> list[Target]:
    """The targets of a run in table order; ``--baseline``'s after the known ones."""
    known = [t for t in TARGETS if t.name in results["targets"]]
    extra = [
        Target(name, entry.get("label", name), entry.get("app", ""), "athena")
        for name, entry in results["targets"].items()
        if name not in BY_NAME
    ]
    return known + extra


def evaluate_goals(results: Results) -> list[dict[str, Any]]:
    goals = [g.evaluate(results) for g in GOALS]
    for target in TARGETS:
        if target.scale_out and target.unavailable:
            goals.append(
                {"goal": f"F7 per-worker figures ({target.label})", "status": target.unavailable}
            )
    return goals


# -- the table -------------------------------------------------------------------


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


Row = tuple[str, Callable[[dict[str, Any]], str]]


def _fig(figure: str, key: str, digits: int = 1) -> Callable[[dict[str, Any]], str]:
    def cell(figures: dict[str, Any]) -> str:
        entry = figures.get(figure)
        if entry is None:
            return "-"
        if "error" in entry:
            return "ERROR"
        if entry.get("supported") is False:
            return "n/s"
        return _fmt(entry.get(key), digits)

    return cell


def _f1_cell(
    level: int, show: Callable[[dict[str, Any]], str | None]
) -> Callable[[dict[str, Any]], str]:
    """A table cell for one F1 level: ``show`` renders that level's entry (None: not there)."""

    def cell(figures: dict[str, Any]) -> str:
        f1 = figures.get("F1")
        if not f1:
            return "-"
        if "error" in f1:
            return "ERROR"
        if f1.get("supported") is False:
            return "n/s"
        for lv in f1.get("levels", []):
            if lv["level"] == level:
                shown = show(lv)
                if shown is not None:
                    return shown
        return "-"

    return cell


def _f1_rss(lv: dict[str, Any]) -> str:
    if "skipped" in lv:
        return "skipped"
    if lv["failures"]:
        return f"{lv['failures']} failed"
    return _fmt(lv["rss_per_page_kib"])


def _f1_push_ms(lv: dict[str, Any]) -> str | None:
    push = lv.get("push")
    if push is None:
        return None
    if push["reached"] != push["pages"]:
        return f"{push['pages'] - push['reached']:,} missed"
    return _fmt(push["last_ms"], 0)


def _f1_held(figures: dict[str, Any]) -> str:
    f1 = figures.get("F1")
    if not f1 or "error" in f1:
        return "ERROR" if f1 else "-"
    if f1.get("supported") is False:
        return "n/s"
    push = f1.get("push_to_all", {})
    return f"{f1.get('max_held', 0):,} ({push.get('reached', 0):,} got a push)"


def _spread(figures: dict[str, Any]) -> str:
    f7 = figures.get("F7")
    if not f7:
        return "-"
    if f7.get("supported") is False:
        return "n/s"
    pages = f7.get("pages_per_worker")
    return " + ".join(f"{n:,}" for n in pages) if pages else "-"


def table_rows(levels: Sequence[int], push_levels: Sequence[int] = ()) -> list[Row]:
    rows: list[Row] = [("F1 idle pages held, zero failures", _f1_held)]
    rows += [(f"F1 RSS KiB/page @ {lv:,}", _f1_cell(lv, _f1_rss)) for lv in levels]
    rows += [(f"F1 one push to all @ {lv:,}, ms", _f1_cell(lv, _f1_push_ms)) for lv in push_levels]
    rows += [
        ("F1 one push to all held pages, ms", _fig("F1", "push_all_ms", 0)),
        ("F2 fan-out to N pages: median ms", _fig("F2", "median_ms")),
        ("F2 fan-out: p99 ms", _fig("F2", "p99_ms")),
        ("F2 of which the broadcast call, median ms", _fig("F2", "broadcast_call_ms")),
        ("F3 sustained push: deliveries/s", _fig("F3", "deliveries_per_s")),
        ("F3 server CPU us/delivery", _fig("F3", "cpu_us_per_delivery")),
        ("F4 browser->server c=1: p50 ms", _fig("F4", "c1_p50_ms", 2)),
        ("F4 c=1: p99 ms", _fig("F4", "c1_p99_ms", 2)),
        ("F4 c=100: calls/s", _fig("F4", "calls_per_s")),
        ("F4 c=100: server CPU us/call", _fig("F4", "cpu_us_per_call")),
        ("F5 server->browser, 100 in flight: round trips/s", _fig("F5", "round_trips_per_s")),
        ("F5 p50 ms", _fig("F5", "p50_ms")),
        ("F5 p99 ms", _fig("F5", "p99_ms")),
        ("F6 replay 1,000 messages: median ms", _fig("F6", "median_ms")),
        ("F6 replay: p99 ms", _fig("F6", "p99_ms")),
        ("F7 per worker (Redis): deliveries/s", _fig("F7", "deliveries_per_s_per_worker")),
        ("F7 per worker: calls/s at c=100", _fig("F7", "calls_per_s_per_worker")),
        ("F7 per worker: round trips/s", _fig("F7", "round_trips_per_s_per_worker")),
        ("F7 pages owned per worker (F2-F6)", _spread),
    ]
    return rows


def render_table(results: Results) -> str:
    targets = measured_targets(results)
    levels = results["params"]["levels"]
    header = ["figure"] + [t.label for t in targets]
    body = []
    for label, cell in table_rows(levels, results["params"].get("push_levels") or []):
        row = [label]
        for t in targets:
            entry = results["targets"][t.name]
            if not entry.get("available", True):
                row.append("n/a*")
            else:
                row.append(cell(_with_f1_push(entry.get("figures", {}))))
        body.append(row)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
            )
            + " |"
        )

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in body]
    notes = [
        f"* {t.label}: {results['targets'][t.name]['reason']}"
        for t in targets
        if not results["targets"][t.name].get("available", True)
    ]
    notes.append("n/s: the library does not support it (see JSON); '-': not measured")
    return "\n".join(out + [""] + notes)


def _with_f1_push(figures: dict[str, Any]) -> dict[str, Any]:
    f1 = figures.get("F1")
    if f1 and "push_to_all" in f1:
        figures = {**figures, "F1": {**f1, "push_all_ms": f1["push_to_all"]["last_ms"]}}
    return figures


def render_goals(goals: list[dict[str, Any]], results: Results) -> str:
    labels = {t.name: t.label for t in measured_targets(results)}
    lines = []
    for g in goals:
        status = g["status"]
        if "measured" in g:
            if g.get("reference"):
                detail = (
                    f"{_fmt(g['value'], 2)} vs {_fmt(g['reference_value'], 2)} "
                    f"({labels.get(g['reference'], g['reference'])}) = "
                    f"{g['measured']:.2f}x, limit {g['op']} {g['limit']}x"
                )
                if g.get("level"):
                    detail += f", at {g['level']:,} pages"
            else:
                detail = f"{_fmt(g['value'], 2)}, limit {g['op']} {g['limit']}"
            lines.append(f"  [{status.upper():6}] {g['goal']}: {detail}")
        else:
            reason = "not measured" if status == "n/a" else status
            lines.append(f"  [N/A   ] {g['goal']}: {reason}")
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------


def plot(results: Results, out: Path) -> list[Path]:
    """One PNG per figure, plus the goals; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets: list[Target] = [
        t for t in measured_targets(results) if results["targets"][t.name].get("available", True)
    ]
    figs = {t.name: results["targets"][t.name].get("figures", {}) for t in targets}
    colors = {
        "bare": "#b5b5b5",
        "raw": "#777777",
        "socketio": "#d9822b",
        "athena": "#2b6cd9",
        "athena-baseline": "#93b3ea",
    }
    written: list[Path] = []
    subtitle = (
        f"{results['params']['mode']} run, {results['machine']['cpu_model']}, "
        f"{results['machine']['nproc']} cores"
    )

    def save(fig: Any, name: str) -> None:
        fig.text(0.99, 0.01, subtitle, ha="right", va="bottom", fontsize=7, color="#555555")
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    def bars(ax: Any, title: str, values: dict[str, float | None], unit: str) -> None:
        names = [t for t in values if values[t] is not None]
        labels = [next(x.label for x in targets if x.name == n) for n in names]
        heights = [values[n] for n in names]
        ax.bar(labels, heights, color=[colors.get(n, "#3a9d5d") for n in names])
        for i, h in enumerate(heights):
            ax.annotate(_fmt(h), (i, h), ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        ax.tick_params(axis="x", labelsize=8)

    def values(figure: str, key: str) -> dict[str, float | None]:
        return {t.name: (figs[t.name].get(figure) or {}).get(key) for t in targets}

    # F1
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for t in targets:
        levels = [
            lv
            for lv in (figs[t.name].get("F1") or {}).get("levels", [])
            if "held" in lv and not lv["failures"]
        ]
        if levels:
            xs = [lv["held"] for lv in levels]
            a1.plot(
                xs,
                [lv["rss_per_page_kib"] for lv in levels],
                "o-",
                label=t.label,
                color=colors.get(t.name),
            )
            a2.plot(
                xs, [lv["rss_mib"] for lv in levels], "o-", label=t.label, color=colors.get(t.name)
            )
    a1.set_title("F1 RSS per idle page", fontsize=10)
    a1.set_xlabel("idle pages held")
    a1.set_ylabel("KiB / page")
    a2.set_title("F1 worker RSS", fontsize=10)
    a2.set_xlabel("idle pages held")
    a2.set_ylabel("MiB")
    a1.legend(fontsize=8)
    save(fig, "f1_idle_pages.png")

    # F2
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    bars(
        a1, "F2 fan-out: time until the last page has it (median)", values("F2", "median_ms"), "ms"
    )
    bars(a2, "F2 fan-out: p99", values("F2", "p99_ms"), "ms")
    save(fig, "f2_fanout.png")

    # F3
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    bars(a1, "F3 sustained push: deliveries/s", values("F3", "deliveries_per_s"), "per second")
    bars(a2, "F3 server CPU per delivery", values("F3", "cpu_us_per_delivery"), "µs")
    save(fig, "f3_sustained_push.png")

    # F4
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    bars(a1, "F4 browser→server calls/s at c=100", values("F4", "calls_per_s"), "per second")
    width = 0.38
    names = [t for t in targets if figs[t.name].get("F4", {}).get("c1_p50_ms") is not None]
    xs = list(range(len(names)))
    a2.bar(
        [x - width / 2 for x in xs],
        [figs[t.name]["F4"]["c1_p50_ms"] for t in names],
        width,
        label="p50",
        color="#8fb3ea",
    )
    a2.bar(
        [x + width / 2 for x in xs],
        [figs[t.name]["F4"]["c1_p99_ms"] for t in names],
        width,
        label="p99",
        color="#2b6cd9",
    )
    a2.set_xticks(list(xs), [t.label for t in names], fontsize=8)
    a2.set_title("F4 latency at concurrency 1", fontsize=10)
    a2.set_ylabel("ms")
    a2.legend(fontsize=8)
    save(fig, "f4_browser_calls.png")

    # F5
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    bars(
        a1,
        "F5 server→browser round trips/s (100 in flight)",
        values("F5", "round_trips_per_s"),
        "per second",
    )
    names = [t for t in targets if (figs[t.name].get("F5") or {}).get("p50_ms") is not None]
    xs = list(range(len(names)))
    a2.bar(
        [x - width / 2 for x in xs],
        [figs[t.name]["F5"]["p50_ms"] for t in names],
        width,
        label="p50",
        color="#8fb3ea",
    )
    a2.bar(
        [x + width / 2 for x in xs],
        [figs[t.name]["F5"]["p99_ms"] for t in names],
        width,
        label="p99",
        color="#2b6cd9",
    )
    a2.set_xticks(list(xs), [t.label for t in names], fontsize=8)
    a2.set_title("F5 round-trip latency", fontsize=10)
    a2.set_ylabel("ms")
    a2.legend(fontsize=8)
    save(fig, "f5_server_calls.png")

    # F6
    fig, ax = plt.subplots(figsize=(6, 4))
    bars(ax, "F6 replay of 1,000 missed messages (median)", values("F6", "median_ms"), "ms")
    ax.axhline(50, color="#c0392b", linestyle="--", linewidth=1)
    ax.annotate("goal < 50 ms", (0, 50), fontsize=8, color="#c0392b", va="bottom")
    save(fig, "f6_replay.png")

    # goals
    goals = [g for g in results["goals"] if "measured" in g and g.get("reference")]
    if goals:
        fig, ax = plt.subplots(figsize=(9, 0.5 * len(goals) + 1.2))
        for i, g in enumerate(goals):
            met = g["status"] == "met"
            ax.barh(i, g["measured"], color="#3a9d5d" if met else "#c0392b")
            ax.plot([g["limit"], g["limit"]], [i - 0.4, i + 0.4], color="black")
            ax.annotate(
                f"{g['measured']:.2f}x",
                (g["measured"], i),
                va="center",
                fontsize=8,
                xytext=(3, 0),
                textcoords="offset points",
            )
        ax.set_yticks(range(len(goals)), [g["goal"] for g in goals], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("flask_athena / reference (black line: goal)")
        ax.set_title("Goals: ratios measured in the same run", fontsize=10)
        save(fig, "goals.png")
    return written
