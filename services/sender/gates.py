"""The sender's gate: before each send (each part of a split request), in one script.

Was it sent already (the part's sent mark)? How many attempts at it so far (the status hash)?
Is the app's circuit closed (``shared.wecom.circuit``)? Do its members have room (the
``Governor``)? :data:`GATE` answers all four in one script that runs the circuit's and the
governor's own Lua (their functions, not copies), and the gates of the sends that reach this
point in one event-loop tick go to Redis in one round trip (a ``TickScripts`` batch the records
of the sends finishing in that tick share, ``services.sender.records``). It also stops at the
first no: a send already made admits nothing, a circuit that says wait leaves the governor
untouched, and a probe whose members have no room gives the probe back, so nothing has to be
undone in another round trip.

On Redis Cluster the keys live in different slots (the marks and the status hash apart from
the app's circuit and windows): the same questions go out as separate calls, in two rounds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from redis.asyncio import Redis

from shared.bus.scripts import Script, TickScripts
from shared.connection import is_cluster
from shared.wecom import circuit
from shared.wecom.governor import ACQUIRE, ACQUIRE_LUA

__all__ = ["GATE", "Gate", "Opened"]

# KEYS: the sent mark, the status hash, the circuit, then the governor's keys (none: nobody
#       is counted).
# ARGV: the attempts field, the circuit's three arguments, then the governor's ten.
# Returns {mark or false, attempts or false, circuit answer, governor answer}; the circuit's
# answer is 0 for a probe given back because the governor said wait.
GATE = Script(
    circuit.ADMIT_LUA
    + ACQUIRE_LUA
    + """
local mark = redis.call('GET', KEYS[1])
local tries = redis.call('HGET', KEYS[2], ARGV[1])
if mark then return {mark, tries, 0, 0} end
local admit = circuit_admit(KEYS[3], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
if admit > 0 or #KEYS == 3 then return {false, tries, admit, 0} end
local gov_keys, gov_args = {}, {}
for i = 4, #KEYS do gov_keys[#gov_keys + 1] = KEYS[i] end
for i = 5, #ARGV do gov_args[#gov_args + 1] = ARGV[i] end
local wait = governor_acquire(gov_keys, gov_args)
if wait > 0 and admit == -1 then
  redis.call('HDEL', KEYS[3], 'probe')
  admit = 0
end
return {false, tries, admit, wait}
"""
)


class Opened(msgspec.Struct, frozen=True):
    """What the gate found: ``mark`` (the part was sent: its record), ``tries`` (attempts so
    far), ``admit`` (the circuit: 0 go, -1 go as its probe, n > 0 wait n ms; never a probe when
    the part was sent or the governor said wait) and ``acquired`` (the governor's answer)."""

    mark: bytes | None
    tries: int
    admit: int
    acquired: int


class Gate:
    """``await gate(...)``: GATE's answer, through ``ticks`` (one round trip a tick)."""

    def __init__(self, redis: Redis, ticks: TickScripts) -> None:
        self.redis = redis
        self._cluster = is_cluster(redis)
        self._ticks = ticks

    async def __call__(
        self,
        mark: str,
        tries: tuple[str, str],
        gate: tuple[list[str], list[int]],
        gov: tuple[list[str], tuple[int | str, ...]] | None,
        ride: TickScripts | None = None,
    ) -> Opened:
        """``ride``: the consumer's batch (``AckOffer.ride``); while it is held for the
        consumer's next read the gate goes in that read's write."""
        if self._cluster:
            return await _cluster_gate(self.redis, mark, tries, gate, gov)
        keys: list[str] = [mark, tries[0], *gate[0]]
        args: list[int | str] = [tries[1], *gate[1]]
        if gov is not None:
            keys += gov[0]
            args += gov[1]
        ticks = ride if ride is not None and ride.holding else self._ticks
        found, count, admit, acquired = await ticks.call(GATE, keys, args)
        return Opened(found, int(count or 0), int(admit), int(acquired))


async def _cluster_gate(
    redis: Redis,
    mark: str,
    tries: tuple[str, str],
    gate: tuple[list[str], list[int]],
    gov: tuple[list[str], tuple[int | str, ...]] | None,
) -> Opened:
    """GATE's answer from separate calls (a cluster pipeline refuses EVALSHA): the mark, the
    count and the circuit at once, then the governor unless the answer is already known."""
    found: Any
    found, count, admit = await asyncio.gather(
        redis.get(mark), redis.hget(*tries), circuit.ADMIT(redis, *gate)
    )
    admit, tries_so_far = int(admit), int(count or 0)
    if found is not None or admit > 0 or gov is None:
        if found is not None and admit == -1:
            await redis.hdel(gate[0][0], "probe")
        return Opened(found, tries_so_far, 0 if found is not None else admit, 0)
    acquired = int(await ACQUIRE(redis, *gov))
    if acquired > 0 and admit == -1:
        await redis.hdel(gate[0][0], "probe")
        admit = 0
    return Opened(None, tries_so_far, admit, acquired)
