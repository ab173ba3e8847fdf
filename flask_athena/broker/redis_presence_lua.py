"""The pure parts of Redis presence: the Lua scripts and the reading of what
they write and publish (no I/O; :mod:`.redis_presence` runs them).

Each script changes a topic's hash, bumps its version and publishes the diff
``[topic, epoch, version, joins, leaves]`` (``joins``/``leaves`` flat
``[ref, entry json, ...]``) in one atomic step.
"""

from __future__ import annotations

import json
from typing import Any

from ..presence import Entries

# KEYS: topic hash, worker index, workers set, topics set
# ARGV: ref, entry, wid, topic, channel, max members, ttl, new epoch, old ref
TRACK = """
local t, w = KEYS[1], KEYS[2]
if redis.call('HEXISTS', t, ARGV[1]) == 1 then return {2, 0} end
local leaves = {}
if ARGV[9] ~= '' then
  local old = redis.call('HGET', t, ARGV[9])
  redis.call('HDEL', w, ARGV[9])
  if old then
    redis.call('HDEL', t, ARGV[9])
    leaves = {ARGV[9], old}
  end
end
if redis.call('EXISTS', t) == 0 then
  redis.call('HSET', t, '#e', ARGV[8], '#v', 0)
elseif #leaves == 0 and redis.call('HLEN', t) - 2 >= tonumber(ARGV[6]) then
  return {-1, 0}
end
redis.call('HSET', t, ARGV[1], ARGV[2])
local v = redis.call('HINCRBY', t, '#v', 1)
local e = redis.call('HGET', t, '#e')
redis.call('HSET', w, ARGV[1], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[7]) end
redis.call('PUBLISH', ARGV[5], cjson.encode({ARGV[4], e, v, {ARGV[1], ARGV[2]}, leaves}))
return {1, v}
"""

# KEYS: topic hash, worker index, workers set, topics set
# ARGV: ref, wid, topic, channel
UNTRACK = """
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
local v = redis.call('HINCRBY', KEYS[1], '#v', 1)
local e = redis.call('HGET', KEYS[1], '#e')
if redis.call('HLEN', KEYS[1]) <= 2 then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[4], ARGV[3])
end
redis.call('PUBLISH', ARGV[4], cjson.encode({ARGV[3], e, v, {}, {ARGV[1], entry}}))
return v
"""

# Every entry of a (dead, or shutting down) worker goes, one diff per topic.
# KEYS: worker index, workers set, topics set
# ARGV: wid, channel, topic key prefix
REAP = """
local index = redis.call('HGETALL', KEYS[1])
local refs, order = {}, {}
for i = 1, #index, 2 do
  local topic = index[i + 1]
  if not refs[topic] then refs[topic] = {}; table.insert(order, topic) end
  table.insert(refs[topic], index[i])
end
for _, topic in ipairs(order) do
  local t = ARGV[3] .. topic
  local leaves = {}
  for _, ref in ipairs(refs[topic]) do
    local entry = redis.call('HGET', t, ref)
    if entry then
      redis.call('HDEL', t, ref)
      table.insert(leaves, ref)
      table.insert(leaves, entry)
    end
  end
  if #leaves > 0 then
    local v = redis.call('HINCRBY', t, '#v', 1)
    local e = redis.call('HGET', t, '#e')
    if redis.call('HLEN', t) <= 2 then
      redis.call('DEL', t)
      redis.call('SREM', KEYS[3], topic)
    end
    redis.call('PUBLISH', ARGV[2], cjson.encode({topic, e, v, {}, leaves}))
  end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return #order
"""


def version_step(have: tuple[str, int] | None, epoch: str, version: int) -> str:
    """What to do with a diff numbered ``(epoch, version)`` of a topic this
    worker has at ``have`` (``None``: empty here).

    ``"apply"`` the next one; ``"skip"`` one already in (a re-read overtook
    it); ``"reset"`` the first of a new epoch (the topic emptied meanwhile:
    what is here left, the diff's joins are everything); ``"resync"`` after a
    gap (re-read the topic).
    """
    if have is None:
        return "apply" if version == 1 else "resync"
    have_epoch, have_version = have
    if have_epoch == epoch:
        if version <= have_version:
            return "skip"
        return "apply" if version == have_version + 1 else "resync"
    return "reset" if version == 1 else "resync"


def parse_pairs(flat: Any) -> Entries:
    """``[ref, entry json, ...]`` of a diff or reap message as entries (``{}`` is empty)."""
    entries: Entries = {}
    if not flat:  # cjson encodes an empty Lua table as {}
        return entries
    for i in range(0, len(flat), 2):
        key, meta = json.loads(flat[i + 1])
        entries[str(flat[i])] = (str(key), meta)
    return entries


def parse_topic_hash(fields: dict[str, str]) -> tuple[tuple[str, int] | None, Entries]:
    """``HGETALL`` of a topic hash as ``((epoch, version) or None, entries)``."""
    if "#e" not in fields:
        return None, {}
    entries: Entries = {}
    for ref, value in fields.items():
        if not ref.startswith("#"):
            key, meta = json.loads(value)
            entries[ref] = (str(key), meta)
    return (fields["#e"], int(fields.get("#v", 0))), entries
