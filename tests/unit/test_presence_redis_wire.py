"""The pure parts of Redis presence: how a worker orders the diffs it
receives, and how it reads what the Lua scripts write and publish."""

from __future__ import annotations

import json

import pytest

from flask_athena.broker.redis_presence_lua import parse_pairs, parse_topic_hash, version_step


@pytest.mark.parametrize(
    ("have", "epoch", "version", "step"),
    [
        (None, "e1", 1, "apply"),  # a new topic: its first change
        (None, "e1", 5, "resync"),  # changes were missed: re-read the topic
        (("e1", 4), "e1", 5, "apply"),  # the next one
        (("e1", 4), "e1", 4, "skip"),  # already in (a re-read overtook it)
        (("e1", 4), "e1", 2, "skip"),
        (("e1", 4), "e1", 7, "resync"),  # a gap
        (("e1", 4), "e2", 1, "reset"),  # emptied and back: a new epoch
        (("e1", 4), "e2", 3, "resync"),  # a new epoch, partly missed
    ],
)
def test_version_step(have: tuple[str, int] | None, epoch: str, version: int, step: str) -> None:
    assert version_step(have, epoch, version) == step


def test_parse_pairs_reads_flat_ref_entry_lists_and_cjsons_empty_table() -> None:
    entry = json.dumps(["alice", {"tab": 1, "ref": "r1"}])
    assert parse_pairs(["r1", entry]) == {"r1": ("alice", {"tab": 1, "ref": "r1"})}
    assert parse_pairs({}) == {} and parse_pairs([]) == {}


def test_parse_topic_hash_skips_the_version_fields() -> None:
    fields = {"#e": "e1", "#v": "3", "r1": json.dumps(["bob", {"ref": "r1"}])}
    assert parse_topic_hash(fields) == (("e1", 3), {"r1": ("bob", {"ref": "r1"})})
    assert parse_topic_hash({}) == (None, {})
