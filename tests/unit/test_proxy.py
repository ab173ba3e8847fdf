"""ATHENA_PROXY_HOPS: which forwarding headers count for the client address and origin."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder

from flask_athena.errors import ConfigurationError
from flask_athena.proxy import client_address, public_origin
from flask_athena.testing import AthenaClient

from .widgets import Recorder, call_body, post_headers


def environ(
    remote: str | None = "10.0.0.1",
    host: str = "internal:8000",
    scheme: str = "http",
    **headers: str,
) -> dict[str, Any]:
    env = EnvironBuilder(
        base_url=f"{scheme}://{host}/",
        headers={k.replace("_", "-"): v for k, v in headers.items()},
    ).get_environ()
    if remote is None:
        env.pop("REMOTE_ADDR", None)
    else:
        env["REMOTE_ADDR"] = remote
    return dict(env)


FORWARDED = {
    "X_Forwarded_For": "6.6.6.6, 203.0.113.7, 10.0.0.9",
    "X_Forwarded_Proto": "http, https",
    "X_Forwarded_Host": "evil.example, app.example",
}


def test_forwarding_headers_are_ignored_by_default() -> None:
    # Anyone can send X-Forwarded-*: without configured hops they change nothing.
    env = environ(**FORWARDED)
    assert client_address(env) == "10.0.0.1"
    assert public_origin(env) == "http://internal:8000"


@pytest.mark.parametrize(
    "hops, address, origin",
    [
        (1, "10.0.0.9", "https://app.example"),
        (2, "203.0.113.7", "http://evil.example"),
        (3, "6.6.6.6", "http://internal:8000"),  # fewer proto/host values than hops
    ],
)
def test_the_nth_value_from_the_right_is_trusted(hops: int, address: str, origin: str) -> None:
    env = environ(**FORWARDED)
    assert client_address(env, hops) == address
    assert public_origin(env, hops) == origin


def test_fewer_addresses_than_hops_falls_back_to_the_peer() -> None:
    # The request did not come through every proxy: the peer is all we know.
    env = environ(X_Forwarded_For="6.6.6.6")
    assert client_address(env, 2) == "10.0.0.1"


def test_the_environ_itself_is_not_rewritten() -> None:
    env = environ(**FORWARDED)
    before = dict(env)
    client_address(env, 1)
    public_origin(env, 1)
    assert env == before


def test_default_ports_are_left_out_and_others_kept() -> None:
    assert public_origin(environ(host="app.example:443", scheme="https")) == "https://app.example"
    assert public_origin(environ(host="app.example:80")) == "http://app.example"
    assert public_origin(environ(host="app.example:8443", scheme="https")) == (
        "https://app.example:8443"
    )
    forwarded = environ(X_Forwarded_Host="app.example", X_Forwarded_Port="8443")
    assert public_origin(forwarded, 1) == "http://app.example:8443"


def test_ipv6_hosts() -> None:
    env = environ(remote="::1", X_Forwarded_For="2001:db8::7", X_Forwarded_Host="[2001:db8::1]")
    assert client_address(env, 1) == "2001:db8::7"
    assert public_origin(env, 1) == "http://[2001:db8::1]"


def test_no_address_at_all_is_unknown() -> None:
    assert client_address(environ(remote=None)) == "unknown"
    assert client_address(environ(remote="  ")) == "unknown"


@pytest.mark.parametrize("hops", [-1, 1.5, True, "1"])
def test_bad_hops_are_refused(hops: Any) -> None:
    with pytest.raises(ValueError):
        client_address(environ(), hops)
    with pytest.raises(ValueError):
        public_origin(environ(), hops)


@pytest.mark.parametrize("value", [-1, 0.5, "x", None])
def test_bad_config_value_names_the_key(make_app: Callable[..., Flask], value: Any) -> None:
    with pytest.raises(ConfigurationError, match="ATHENA_PROXY_HOPS"):
        make_app(ATHENA_PROXY_HOPS=value)


# -- the Origin check behind a proxy ------------------------------------------------


def post_through_proxy(
    make_app: Callable[..., Flask], hops: int, origin: str, **forwarded: str
) -> int:
    """POST a call whose Origin is ``origin`` as a proxy in front would pass it on."""
    app = make_app(lambda: [Recorder()], ATHENA_PROXY_HOPS=hops)
    page = AthenaClient(app).open(base_url="http://backend:8000")
    headers = post_headers(page, Origin=origin)
    headers.update({k.replace("_", "-"): v for k, v in forwarded.items()})
    response = page.client.flask.post(
        page.config["calls"],
        data=json.dumps(call_body(1, "echo", "hi")),
        headers=headers,
        base_url="http://backend:8000",
    )
    return response.status_code


def test_origin_of_the_public_host_passes_behind_a_trusted_proxy(
    make_app: Callable[..., Flask],
) -> None:
    forwarded = {"X_Forwarded_Proto": "https", "X_Forwarded_Host": "app.example"}
    assert post_through_proxy(make_app, 1, "https://app.example", **forwarded) == 200
    # The backend's own name is not what the browser used.
    assert post_through_proxy(make_app, 1, "http://backend:8000", **forwarded) == 403


def test_forged_forwarding_headers_do_not_pass_the_origin_check(
    make_app: Callable[..., Flask],
) -> None:
    # With hops = 0 an attacker's page cannot make its origin "same" by
    # sending X-Forwarded-Host (a non-browser client could, but it sends no
    # cookie of the victim: CSRF needs a browser).
    forged = {"X_Forwarded_Proto": "https", "X_Forwarded_Host": "evil.example"}
    assert post_through_proxy(make_app, 0, "https://evil.example", **forged) == 403
    assert post_through_proxy(make_app, 0, "http://backend:8000", **forged) == 200
