"""The I/O-free sequencer: plan → run → record, without gevent or Flask."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from flask_athena.errors import SequenceGap
from flask_athena.protocol import CallMessage, DetachMessage, SequencedMessage
from flask_athena.sequencer import Sequencer, batch_reply


def call(seq: int) -> CallMessage:
    return CallMessage(seq, 1, "m", [], {})


def ran(sequencer: Sequencer, messages: list[SequencedMessage]) -> list[int]:
    """Plan, "run" what the plan says (recording an answer), return the seqs run."""
    steps = sequencer.plan(messages)
    for step in steps:
        if step.run:
            sequencer.record(step.message.seq, (200, f'{{"seq":{step.message.seq},"ok":1}}'))
    return [step.message.seq for step in steps if step.run]


def test_the_module_imports_no_gevent_and_no_flask() -> None:
    import flask_athena.sequencer as module

    tree = ast.parse(Path(module.__file__ or "").read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported and not {name for name in imported if name.split(".")[0] in ("gevent", "flask")}


def test_consecutive_batches_run_in_order() -> None:
    sequencer = Sequencer()
    assert ran(sequencer, [call(1), call(2)]) == [1, 2]
    assert ran(sequencer, [call(3)]) == [3]
    assert sequencer.expected == 4


def test_a_retried_batch_is_answered_from_the_record_not_run() -> None:
    sequencer = Sequencer()
    assert ran(sequencer, [call(1), call(2)]) == [1, 2]
    steps = sequencer.plan([call(1), call(2)])
    assert [step.run for step in steps] == [False, False]
    assert sequencer.answer(2) == (200, '{"seq":2,"ok":1}')


def test_a_retry_that_overlaps_new_calls_runs_only_the_new_ones() -> None:
    sequencer = Sequencer()
    ran(sequencer, [call(1)])
    assert ran(sequencer, [call(1), call(2)]) == [2]


def test_a_gap_is_refused_with_the_expected_seq_and_admits_nothing() -> None:
    sequencer = Sequencer()
    ran(sequencer, [call(1)])
    with pytest.raises(SequenceGap) as info:
        sequencer.plan([call(5)])
    assert info.value.to_json()["expected"] == 2
    assert sequencer.expected == 2 and len(sequencer) == 1


def test_answers_before_a_new_batch_are_forgotten() -> None:
    sequencer = Sequencer()
    ran(sequencer, [call(1), call(2)])
    ran(sequencer, [call(3)])
    assert sequencer.answer(1) is None and sequencer.answer(2) is None
    assert len(sequencer) == 1


def test_a_forgotten_seq_sent_again_is_a_400_not_a_second_run() -> None:
    sequencer = Sequencer()
    ran(sequencer, [call(1)])
    ran(sequencer, [call(2)])
    steps = sequencer.plan([call(1), call(2)])
    assert [step.run for step in steps] == [False, False]
    status, body = sequencer.answer(1)  # type: ignore[misc]
    assert status == 400 and json.loads(body)["error"]["code"] == "bad-message"


def test_a_running_call_has_no_answer_yet_and_is_not_forgotten() -> None:
    sequencer = Sequencer()
    steps = sequencer.plan([call(1)])
    assert steps[0].run and sequencer.answer(1) is None
    # The browser may not send seq 2 before it has 1's answer, but even then
    # the running call stays on record for the POST waiting on it.
    sequencer.plan([call(2)])
    assert 1 in [s for s in (1, 2) if sequencer.answer(s) is None]
    sequencer.record(1, (200, "x"))
    assert sequencer.answer(1) == (200, "x")


def test_detaches_are_sequenced_like_calls() -> None:
    sequencer = Sequencer()
    assert ran(sequencer, [call(1), DetachMessage(2, 1)]) == [1, 2]


def test_clear_forgets_everything() -> None:
    sequencer = Sequencer()
    ran(sequencer, [call(1)])
    sequencer.clear()
    assert len(sequencer) == 0


def test_batch_reply_takes_the_first_client_error_status() -> None:
    assert batch_reply([(200, "a"), (404, "b"), (400, "c")]) == (404, '{"results":[a,b,c]}')
    assert batch_reply([]) == (200, '{"results":[]}')
