"""``flask athena ...`` with the in-process broker (tests/integration covers Redis)."""

from __future__ import annotations

from typing import Callable

from flask import Flask

from .widgets import Recorder


def test_check_reports_the_configuration_and_the_in_process_broker(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_HEARTBEAT=7.0)
    result = app.test_cli_runner().invoke(args=["athena", "check"])
    assert result.exit_code == 0, result.output
    assert "configuration: valid" in result.output
    assert "ATHENA_HEARTBEAT = 7.0" in result.output
    assert "broker: in-process" in result.output


def test_pages_and_broadcast_need_a_shared_broker(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Recorder()])
    runner = app.test_cli_runner()
    for args in (["athena", "pages"], ["athena", "broadcast", "room", "hear", "x"]):
        result = runner.invoke(args=args)
        assert result.exit_code == 1
        assert "needs ATHENA_BROKER_URL" in result.output


def test_check_hides_the_broker_password(make_app: Callable[..., Flask]) -> None:
    # Port 9 (discard) on loopback: nothing answers, so the check fails fast.
    app = make_app(ATHENA_BROKER_URL="redis://:s3cret@127.0.0.1:9/0")
    result = app.test_cli_runner().invoke(args=["athena", "check"])
    assert result.exit_code == 1
    assert "UNREACHABLE" in result.output
    assert "s3cret" not in result.output
