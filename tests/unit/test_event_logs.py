"""Structured log records: logger ``flask_athena.events``, stable ``extra`` fields, no page id."""

from __future__ import annotations

import logging
from typing import Callable

import pytest
from flask import Flask

from flask_athena import signals
from flask_athena.snapshot import page_ref
from flask_athena.testing import AthenaClient, CallFailed

from .widgets import Recorder


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "flask_athena.events"]


def test_page_life_and_failures_are_logged_with_stable_fields(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(lambda: [Recorder()])
    caplog.set_level(logging.DEBUG, logger="flask_athena.events")
    page = AthenaClient(app).open()
    ref = page_ref(page.live)
    with pytest.raises(CallFailed):
        page.call(1, "no_such_method_77")
    signals.stream_cut.send(app, page=page.live, reason="write blocked")
    signals.broker_error.send(app, operation="write", error=ConnectionError("down"))
    page.close()
    records = {r.athena_event: r for r in events(caplog)}  # type: ignore[attr-defined]
    assert set(records) >= {
        "page-opened",
        "call-failed",
        "stream-cut",
        "broker-error",
        "page-closed",
    }
    assert records["page-opened"].athena_page == ref  # type: ignore[attr-defined]
    failed = records["call-failed"]
    assert failed.athena_code == "method-not-found"  # type: ignore[attr-defined]
    assert failed.athena_method == "(unknown)"  # type: ignore[attr-defined]
    assert records["stream-cut"].athena_reason == "write blocked"  # type: ignore[attr-defined]
    assert records["broker-error"].athena_operation == "write"  # type: ignore[attr-defined]
    assert records["broker-error"].athena_error == "ConnectionError"  # type: ignore[attr-defined]
    assert records["page-closed"].athena_reason == "closed"  # type: ignore[attr-defined]
    assert records["page-closed"].levelno == logging.DEBUG
    assert records["call-failed"].levelno == logging.INFO
    # Page ids are never logged; the user's method name neither.
    for record in events(caplog):
        text = record.getMessage() + repr(vars(record))
        assert page.config["page"] not in text
        assert "no_such_method_77" not in text


def test_the_recent_errors_of_the_inspector_are_bounded(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    for _ in range(200):
        signals.stream_cut.send(app, page=None, reason="too far behind")
    errors = app.extensions["athena"].ops.errors
    assert len(errors) == 50
    assert errors[-1]["kind"] == "stream-cut"


def test_a_browser_closing_its_own_page_is_not_a_recent_error(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    signals.page_gone.send(app, reason="closed")
    signals.page_gone.send(app, reason="outbox-trimmed")
    errors = app.extensions["athena"].ops.errors
    assert [e["detail"] for e in errors] == ["outbox-trimmed"]
