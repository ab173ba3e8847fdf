"""Unit tests: no sockets, no sleeps; every test is leak-checked."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _leak_check(no_leaks: None) -> Iterator[None]:
    yield
