"""Core behaviour in Chromium, Firefox and WebKit against ``tests/apps/browser_app.py``.

Calls and their values and errors in both directions, argument checks,
nesting, widgets built on demand, ``data-athena-on``, page-level functions,
detaching from either side. One server for the module; every test opens its
own page as a new user (its own cookie jar, so its own session) of each
engine, so tests share nothing but the process.

The probe page's widgets, by server id: 1 Probe ("probe"), 2 Child
("first"), 3 Leaf ("leaf", child of 2), 4 Child ("second"); widgets made
later get 5, 6, ...
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import BROWSER_APP, start_server
from tests.browser.engines import User
from tests.browser.live import LiveTab, open_live, wait_value
from tests.support import LiveServer

pytestmark = pytest.mark.browser

PROBE, FIRST, LEAF, SECOND = 1, 2, 3, 4


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = start_server(BROWSER_APP, "core")
    yield server
    server.stop()


@pytest.fixture
def probe_page(server: LiveServer, user: User) -> Iterator[LiveTab]:
    live = open_live(user, server.url + "/core")
    yield live
    # LiveTab.errors leaves out the browser's own "Failed to load resource"
    # (tests that provoke 4xx on purpose check their answers themselves).
    assert not live.errors, live.errors


def test_call_remote_resolves_with_the_python_return_value(probe_page: LiveTab) -> None:
    assert probe_page.run("return await widget(1).callRemote('add_numbers', 2, 40)") == 42
    sent = [1, 2.5, "é ✓ \u2028", None, True, {"nested": [1, {"deep": []}]}]
    described = probe_page.run("return await widget(1).callRemote('describe', ...arg)", sent)
    assert described == {
        "args": sent,
        "kwargs": {},
        "types": ["int", "float", "str", "NoneType", "bool", "dict"],
    }
    # A child widget's own exposed method.
    assert probe_page.run("return await widget(3).callRemote('whoami')") == "leaf"


def test_call_remote_kw_passes_keyword_arguments(probe_page: LiveTab) -> None:
    result = probe_page.run(
        "return await widget(1).callRemoteKw('greet', {name: 'Ann', punctuation: '?'})"
    )
    assert result == "Hello, Ann?"
    described = probe_page.run("return await widget(1).callRemoteKw('describe', {x: 1, y: [2, 3]})")
    assert described == {"args": [], "kwargs": {"x": 1, "y": [2, 3]}, "types": []}


def test_server_call_get_receives_the_js_return_value(probe_page: LiveTab) -> None:
    # Probe.ask runs call_remote(...).get() inside an exposed method: the
    # browser's answer must reach it while that call holds the page's lane.
    ask = "return await widget(1).callRemote('ask', arg[0], arg[1])"
    assert probe_page.run(ask, ["double", [21]]) == {"ok": 42}
    # A JS method returning a Promise: the server gets the settled value.
    assert probe_page.run(ask, ["later", ["soon", 150]]) == {"ok": {"later": "soon"}}


def test_exposed_method_waiting_on_the_browser_does_not_block_later_calls(
    probe_page: LiveTab,
) -> None:
    order = probe_page.run(
        """
        const seen = [];
        const slow = widget(1).callRemote('ask', 'later', ['slow', 400])
          .then((v) => { seen.push(['ask', v]); });
        const quick = widget(1).callRemote('add_numbers', 1, 1)
          .then((v) => { seen.push(['add', v]); });
        await Promise.all([slow, quick]);
        return seen;
        """
    )
    # Calls of one page run one at a time, in order: the quick call waits for
    # the slow one, which finishes because its browser answer is not queued.
    assert order == [["ask", {"ok": {"later": "slow"}}], ["add", 2]]


def test_python_exception_rejects_the_promise_with_remote_error(
    probe_page: LiveTab,
) -> None:
    error = probe_page.run(
        """
        try { await widget(1).callRemote('fail', 'secret detail 1234'); }
        catch (e) {
          return {isRemoteError: e instanceof RemoteError, name: e.name, code: e.code,
                  message: e.message};
        }
        return null;
        """
    )
    assert error is not None, "callRemote('fail') resolved"
    assert error["isRemoteError"] and error["name"] == "RemoteError"
    assert error["code"] == "remote-error"
    # Not in debug mode: the browser gets a generic message, no details.
    assert "secret detail" not in error["message"]
    # The page keeps working after a failed call.
    assert probe_page.run("return await widget(1).callRemote('add_numbers', 1, 2)") == 3


def test_js_exception_raises_remote_error_with_js_name_and_message_on_the_server(
    probe_page: LiveTab,
) -> None:
    ask = "return await widget(1).callRemote('ask', arg[0], arg[1])"
    assert probe_page.run(ask, ["explode", ["kaboom"]]) == {
        "error": "RemoteError",
        "js_name": "RangeError",
        "message": "kaboom",
    }
    # A rejected Promise is the same as a throw.
    assert probe_page.run(ask, ["rejectLater", ["not today"]]) == {
        "error": "RemoteError",
        "js_name": "TypeError",
        "message": "not today",
    }
    # An unknown method rejects the server's call instead of leaving it hanging.
    unknown = probe_page.run(ask, ["noSuchMethod", []])
    assert unknown["error"] == "RemoteError" and "noSuchMethod" in unknown["message"]


def test_bad_arguments_are_refused_before_the_method_runs(probe_page: LiveTab) -> None:
    attempts = probe_page.run(
        """
        const probe = widget(1);
        const attempts = [
          () => probe.callRemote('add_numbers', 'two', 3),      // wrong type
          () => probe.callRemote('add_numbers', 1),             // missing argument
          () => probe.callRemote('add_numbers', 1, 2, 3),       // one too many
          () => probe.callRemoteKw('greet', {nobody: 'x'}),     // unknown keyword
          () => probe.callRemote('add_numbers', 1.5, 2),        // float for int
        ];
        const codes = [];
        for (const attempt of attempts) {
          try { await attempt(); codes.push('resolved'); }
          catch (e) { codes.push([e instanceof RemoteError, e.code]); }
        }
        return codes;
        """
    )
    assert attempts == [[True, "bad-arguments"]] * 5
    # Unexposed and missing methods give one answer.
    codes = probe_page.run(
        """
        const codes = [];
        for (const name of ['not_exposed', 'no_such_method', '_private', 'detach']) {
          try { await widget(1).callRemote(name); codes.push('resolved'); }
          catch (e) { codes.push(e.code); }
        }
        return codes;
        """
    )
    assert codes == ["method-not-found"] * 4
    # None of them ran.
    assert probe_page.run("return await widget(1).callRemote('added_count')") == 0


def test_nested_widgets_match_the_server_tree(probe_page: LiveTab) -> None:
    server_tree = probe_page.run("return await widget(1).callRemote('tree')")
    browser_tree = probe_page.run(
        """
        const classOf = (w) => w.node.getAttribute('data-athena-class');
        const walk = (w) => ({
          id: w.widgetId, class: classOf(w),
          parent: w.widgetParent ? w.widgetParent.widgetId : null,
          children: w.childWidgets.map(walk),
        });
        const roots = Athena.widgets().filter((w) => w.widgetParent === null);
        return roots.map(walk);
        """
    )
    assert browser_tree == [server_tree]
    assert [c["id"] for c in server_tree["children"]] == [FIRST, SECOND]
    assert server_tree["children"][0]["children"][0]["id"] == LEAF
    # Widget.get finds the owner of any node, and constructors ran in order.
    owners = probe_page.run(
        """
        const { lifecycle } = await import('Core');
        const label = document.querySelector('[data-athena-widget="3"] .label');
        return {owner: Widget.get(label).widgetId, lifecycle};
        """
    )
    assert owners == {
        "owner": LEAF,
        "lifecycle": ["loaded:probe", "loaded:first", "loaded:leaf", "loaded:second"],
    }


def test_widget_returned_from_an_exposed_method_loads_its_module_on_demand(
    probe_page: LiveTab,
) -> None:
    loaded = (
        "return performance.getEntriesByType('resource')"
        ".some((e) => e.name.endsWith('/static/athena/Dynamic.js'))"
    )
    import_map = probe_page.tab.js("document.querySelector('script[type=importmap]').textContent")
    assert "Dynamic" not in import_map and "Core" in import_map
    assert probe_page.run(loaded) is False

    thing = probe_page.run(
        """
        const thing = await widget(1).callRemote('make_thing', 'on demand');
        document.querySelector('.dynamic').append(thing.node);
        return {isWidget: thing instanceof Widget, cls: thing.constructor.name,
                id: thing.widgetId, parent: thing.widgetParent.widgetId,
                inParentChildren: widget(1).childWidgets.includes(thing),
                hello: await thing.callRemote('whoami'),
                local: thing.hello()};
        """
    )
    assert probe_page.run(loaded) is True
    assert thing == {
        "isWidget": True,
        "cls": "Thing",
        "id": 5,
        "parent": PROBE,
        "inParentChildren": True,
        "hello": "on demand",
        "local": "hello from on demand",
    }
    server_tree = probe_page.run("return await widget(1).callRemote('tree')")
    assert server_tree["children"][-1] == {
        "id": 5,
        "class": "Dynamic.Thing",
        "parent": PROBE,
        "children": [],
    }
    probe_page.wait_visible('[data-athena-class="Dynamic.Thing"]')
    probe_page.screenshot("core_dynamic_widget")


def test_widget_passed_to_call_remote_arrives_as_a_constructed_widget(
    probe_page: LiveTab,
) -> None:
    loaded = (
        "return performance.getEntriesByType('resource')"
        ".some((e) => e.name.endsWith('/static/athena/Pushed.js'))"
    )
    assert probe_page.run(loaded) is False
    result = probe_page.run("return await widget(1).callRemote('push_gadget', 'pushed')")
    assert probe_page.run(loaded) is True
    assert result == {
        "server_id": 5,
        "server_parent": PROBE,
        "browser": {
            "isWidget": True,
            "cls": "Gadget",
            "id": 5,
            "parent": PROBE,
            "inDocument": True,
        },
    }
    assert (
        probe_page.tab.js(
            "document.querySelector('[data-athena-widget=\"5\"]').dataset.athenaClass"
        )
        == "Pushed.Gadget"
    )
    assert probe_page.texts('[data-athena-widget="5"] .label') == ["pushed"]
    assert probe_page.run("return await widget(5).callRemote('whoami')") == "pushed"


def test_data_athena_on_click_calls_the_widget_method(probe_page: LiveTab) -> None:
    probe_page.tab.click("button.click-me")
    probe_page.wait_texts(".clicks", ["1"])
    probe_page.tab.click("button.click-me")
    probe_page.tab.click("button.click-me")
    probe_page.wait_texts(".clicks", ["3"])
    assert probe_page.run("return await widget(1).callRemote('clicked')") == 4


def test_page_level_function_called_by_the_server(probe_page: LiveTab) -> None:
    ask = "return await widget(1).callRemote('ask_global', arg[0], arg[1])"
    assert probe_page.run(ask, ["documentTitle", []]) == {"ok": "Core behaviour"}
    assert probe_page.run(ask, ["sum", [1, 2, 3.5]]) == {"ok": 6.5}
    assert probe_page.run(ask, ["upperLater", ["promise"]]) == {"ok": "PROMISE"}
    assert probe_page.run(ask, ["refuse", ["no way"]]) == {
        "error": "RemoteError",
        "js_name": "SyntaxError",
        "message": "no way",
    }
    unregistered = probe_page.run(ask, ["neverRegistered", []])
    assert unregistered["error"] == "RemoteError"
    assert "neverRegistered" in unregistered["message"]


def test_detach_from_the_browser_runs_hooks_on_both_sides(probe_page: LiveTab) -> None:
    result = probe_page.run(
        """
        const { lifecycle } = await import('Core');
        const first = widget(2);
        await first.detach();   // resolves when the server has acknowledged
        return {
          lifecycle,
          inDocument: document.contains(first.node),
          registered: Athena.widgets().map((w) => w.widgetId),
          probeChildren: widget(1).childWidgets.map((w) => w.widgetId),
        };
        """
    )
    # Children first, in the browser...
    assert result["lifecycle"][-2:] == ["detached:leaf", "detached:first"]
    assert result["inDocument"] is False
    assert result["registered"] == [PROBE, SECOND]
    assert result["probeChildren"] == [SECOND]
    # ... and on the server.
    assert probe_page.run("return await widget(1).callRemote('lifecycle')") == [
        "detached:leaf",
        "detached:first",
    ]
    assert probe_page.run("return await widget(1).callRemote('on_page')") == [PROBE, SECOND]
    assert probe_page.count('[data-athena-widget="2"]') == 0


def test_detach_from_the_server_runs_hooks_on_both_sides(probe_page: LiveTab) -> None:
    probe_page.run("window.kept = widget(2);")
    assert probe_page.run("return await widget(1).callRemote('detach_child', 2)") is True
    assert probe_page.run("return await widget(1).callRemote('lifecycle')") == [
        "detached:leaf",
        "detached:first",
    ]
    # The browser learns it from the event stream.
    wait_value(lambda: probe_page.count('[data-athena-widget="2"]'), 0)
    probe_page.expose_module("Core", "Core")
    probe_page.wait("Core.lifecycle.includes('detached:first')")
    browser = probe_page.run(
        """
        const { lifecycle } = await import('Core');
        return {lifecycle: lifecycle.filter((e) => e.startsWith('detached')),
                registered: Athena.widgets().map((w) => w.widgetId),
                probeChildren: widget(1).childWidgets.map((w) => w.widgetId)};
        """
    )
    assert browser == {
        "lifecycle": ["detached:leaf", "detached:first"],
        "registered": [PROBE, SECOND],
        "probeChildren": [SECOND],
    }
    # A handle kept on the detached widget gets refused; the rest works.
    stale = probe_page.run(
        "try { await window.kept.callRemote('whoami'); return 'resolved'; }"
        " catch (e) { return e.code; }"
    )
    assert stale == "widget-not-found"
    assert probe_page.run("return await widget(4).callRemote('whoami')") == "second"
