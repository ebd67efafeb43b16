"""The shared store's layout in Redis (or Valkey): its keys, the scripts that write them, and the checks a reader
applies to what it finds there. One owner; :mod:`.redis_store` holds the daemons' writer and the API's reader.

Under the prefix ``volspike:funding:``, every key a hash or a string of the service's own, so a reader never scans
the database (1M unrelated keys in the same database used to make every API refresh scan them all)::

    records     hash  symbol -> the state file's record (JSON), newest Binance event time wins
    events      hash  symbol -> that record's eventTime (ms), compared server-side
    stored      hash  symbol -> when the store applied it, in the store's clock (ms)
    daemons     hash  daemon id -> its status (the state file's document without funding_state, JSON)
    beats       hash  daemon id -> its last heartbeat, in the store's clock (ms)
    reference   the reference-data file's document (exchangeInfo, fundingInfo, interest rates)
    market      the market feed's document (klines, tickers: :mod:`.marketfile`'s format), freshest feed wins
    market:meta hash  of that document: version (its writer's id:sequence), at (its feed time, store's clock, ms),
                skew (store's clock - its writer's clock, ms), by (its writer's id)
    changed     pub/sub channel: a message after every write that changed something

Times that cross hosts are the store's (Redis ``TIME``, stamped inside the scripts): a reader translates them to
its own clock with the offset it measures in the same round trip, so a daemon host whose clock is 10 s ahead of the
API's host no longer makes every record "from the future", and a status record cannot claim a heartbeat the store
did not see.
"""

from __future__ import annotations

from typing import Any

PREFIX = "volspike:funding:"
RECORDS, EVENTS, STORED = PREFIX + "records", PREFIX + "events", PREFIX + "stored"
DAEMONS, BEATS = PREFIX + "daemons", PREFIX + "beats"
CHANNEL = PREFIX + "changed"
#: Binance's reference data (:mod:`.reference`'s document), so API instances on other hosts serve it too.
REFERENCE = PREFIX + "reference"
#: The market feed's document and its feed time (:mod:`.redis_market`).
MARKET, MARKET_META = PREFIX + "market", PREFIX + "market:meta"
#: Written by a reader only to learn whether the store accepts writes when no daemon reports (out of memory?).
PROBE = PREFIX + "probe"

#: A status is live for 3 heartbeats, at least 15 s and at most this long, whatever the status itself claims.
MAX_STATUS_TTL_S = 180.0
#: A heartbeat stamped later than the store's clock by more than this is not believed (a forged or broken record).
BEAT_SLACK_MS = 1_000

# KEYS: records, events, stored. ARGV: max_future_ms, slack_ms, channel, then (symbol, eventTime, record) triples.
NEWEST_WINS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_future, slack = tonumber(ARGV[1]), tonumber(ARGV[2])
local changed = 0
for i = 4, #ARGV, 3 do
  local symbol, event, record = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if event <= now + max_future then
    local old = tonumber(redis.call('HGET', KEYS[2], symbol))
    if (not old) or old < event or old > now + slack then
      redis.call('HSET', KEYS[2], symbol, event)
      redis.call('HSET', KEYS[1], symbol, record)
      redis.call('HSET', KEYS[3], symbol, now)
      changed = changed + 1
    end
  end
end
if changed > 0 then redis.call('PUBLISH', ARGV[3], changed) end
return changed
"""

# KEYS: daemons, beats. ARGV: daemon id, status JSON, ttl_ms. Stamps the heartbeat with the store's clock and
# forgets every status whose heartbeat is older than its ttl (the per-key TTL the layout had before, in a hash).
HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], now)
local ttl = tonumber(ARGV[3])
local beats = redis.call('HGETALL', KEYS[2])
for i = 1, #beats, 2 do
  local beat = tonumber(beats[i + 1])
  if (not beat) or beat < now - ttl then
    redis.call('HDEL', KEYS[2], beats[i])
    redis.call('HDEL', KEYS[1], beats[i])
  end
end
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], id) == 0 then redis.call('HDEL', KEYS[1], id) end
end
return now
"""


def status_ttl_s(heartbeat_interval_s: Any) -> float:
    """How long a daemon's status stays live: 3 heartbeats, at least 15 s, at most :data:`MAX_STATUS_TTL_S`."""
    interval = heartbeat_interval_s if isinstance(heartbeat_interval_s, (int, float)) else 5.0
    return min(max(3 * float(interval), 15.0), MAX_STATUS_TTL_S)


def _number(raw: Any) -> float | None:
    return float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None


def checked_status(daemon_id: str, status: Any, beat_ms: float | None, store_now_ms: float,
                   offset_s: float) -> dict[str, Any] | None:
    """A daemon's status as a reader may use it, or ``None`` when it does not parse as one (an outsider's junk, a
    forged or expired heartbeat). ``heartbeat_at`` becomes the store's stamp in the reader's clock
    (``offset_s`` = reader's clock - store's clock), so liveness is judged by a clock every reader shares."""
    if not isinstance(status, dict) or status.get("daemon_id") != daemon_id or beat_ms is None:
        return None
    if not isinstance(status.get("connection_status"), dict) or _number(status.get("started_at")) is None:
        return None
    if beat_ms > store_now_ms + BEAT_SLACK_MS:
        return None
    if store_now_ms - beat_ms > status_ttl_s(status.get("heartbeat_interval_s")) * 1000:
        return None
    return {**status, "heartbeat_at": beat_ms / 1000 + offset_s}


def store_now(redis_time: Any) -> float:
    """Redis ``TIME`` (seconds, microseconds) in seconds."""
    seconds, micros = redis_time
    return float(seconds) + float(micros) / 1e6


def beat_ms(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None

# KEYS: market, market:meta. ARGV: the writer's clock when it sent this (ms), the document's lastFrameAt in that
# clock (ms; '' before the first frame), the writer's id, the document's version, the document. The feed time is
# compared in the store's clock, so a daemon host whose clock is ahead does not win with an older feed; a writer's
# own next write always replaces its last (it is newer by construction, even across a step of its host's clock).
NEWER_MARKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local skew = now - tonumber(ARGV[1])
local at = 0
-- a frame after the write's own time cannot be (a clock step, a bug): never a feed time ahead of the store's, which
-- would lock every other daemon's document out until then
if ARGV[2] ~= '' then at = math.min(tonumber(ARGV[2]), tonumber(ARGV[1])) + skew end
local old = redis.call('HMGET', KEYS[2], 'at', 'by')
local old_at = tonumber(old[1])
if (not old_at) or old[2] == ARGV[3] or old_at <= at then
  redis.call('SET', KEYS[1], ARGV[5])
  redis.call('HSET', KEYS[2], 'version', ARGV[4], 'at', at, 'skew', skew, 'by', ARGV[3])
  return 1
end
return 0
"""

# KEYS: market, market:meta. ARGV: the version the reader holds ('' none). Returns the store's TIME (seconds,
# microseconds), the stored version and skew, and the document only when its version is not the reader's:
# an idle reader's poll costs ~60 bytes instead of the whole document, and the document and its stamps come from one
# atomic read.
READ_MARKET = """
local t = redis.call('TIME')
local meta = redis.call('HMGET', KEYS[2], 'version', 'skew')
local answer = {t[1], t[2], meta[1], meta[2]}
if not (meta[1] and meta[1] == ARGV[1]) then answer[5] = redis.call('GET', KEYS[1]) end
return answer
"""
