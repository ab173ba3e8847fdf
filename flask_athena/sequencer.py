"""Ordering and de-duplication of browser → server calls, with no I/O.

The browser numbers its calls and detaches (``seq``) and keeps one
sequenced POST in flight; a POST it retries (its answer was lost) carries
the same numbers again. :class:`Sequencer` decides, for each message of a
batch, whether to run it, answer it from the record of its first run, or
refuse it — *plan* — and keeps the answers — *record* — so that a retried
batch is answered, never run twice. :meth:`LivePage.receive
<flask_athena.page.LivePage.receive>` is the greenlet code around it: it
runs what the plan says, one at a time, and waits for answers still being
computed by another POST.

Pure data and functions: no gevent, no Flask; tested on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .errors import AthenaError, BadMessage, SequenceGap
from .protocol import SequencedMessage, dumps

#: ``(HTTP status, JSON of one result)``: the answer to one message.
Answer = tuple[int, str]


class Step(NamedTuple):
    """What to do with one message of a batch."""

    #: The message.
    message: SequencedMessage
    #: ``True``: run it now (first time seen); ``False``: answer from the record.
    run: bool


class Sequencer:
    """One page's ``seq`` bookkeeping (see the module docstring).

    Not thread-safe and needs no lock under gevent: :meth:`plan` and
    :meth:`record` never yield.
    """

    __slots__ = ("expected", "_answers")

    def __init__(self) -> None:
        #: The next ``seq`` that has not been admitted yet.
        self.expected = 1
        #: seq -> answer, or None while its call runs.
        self._answers: dict[int, Answer | None] = {}

    def __len__(self) -> int:
        """How many answers (or running calls) are on record."""
        return len(self._answers)

    def plan(self, messages: Sequence[SequencedMessage]) -> list[Step]:
        """Admit a batch's consecutive messages; say which to run.

        Raises :class:`~flask_athena.errors.SequenceGap` when the batch
        starts past :attr:`expected` (a batch was lost before it). A message
        already run and forgotten is answered with a 400 on record (the
        browser broke the protocol).
        """
        if not messages:
            return []
        first = messages[0].seq
        if first > self.expected:
            raise SequenceGap(expected=self.expected)
        # The browser sends one sequenced batch at a time, so a batch starting
        # at `first` means it has the answers of everything before it.
        done = [s for s, answer in self._answers.items() if s < first and answer is not None]
        for seq in done:
            del self._answers[seq]
        steps = []
        for message in messages:
            seq = message.seq
            if seq in self._answers:
                steps.append(Step(message, run=False))
            elif seq < self.expected:
                self._answers[seq] = (400, error_result(seq, BadMessage("seq already answered")))
                steps.append(Step(message, run=False))
            else:
                self._answers[seq] = None
                self.expected = seq + 1
                steps.append(Step(message, run=True))
        return steps

    def record(self, seq: int, answer: Answer) -> None:
        """Keep the answer of a message that ran (for a retried batch)."""
        self._answers[seq] = answer

    def answer(self, seq: int) -> Answer | None:
        """The recorded answer of ``seq``; ``None`` while it runs (or unknown)."""
        return self._answers.get(seq)

    def clear(self) -> None:
        """Forget every answer (the page closed)."""
        self._answers.clear()


def batch_reply(answers: Sequence[Answer]) -> tuple[int, str]:
    """``(status, body)`` of a POST from its messages' answers.

    The status is the first non-200 one (a client error in the batch);
    the body lists every result in order.
    """
    status = next((code for code, _ in answers if code != 200), 200)
    return status, '{"results":[' + ",".join(reply for _, reply in answers) + "]}"


def error_result(seq: int, error: AthenaError) -> str:
    """The JSON of one message's failed result: ``{"seq", "error": {...}}``."""
    body = error.to_json()
    body.setdefault("name", type(error).__name__)
    return dumps({"seq": seq, "error": body})
