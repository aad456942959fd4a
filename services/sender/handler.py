"""The outbox handler: one send request in, each of its messages delivered to WeCom once.

For each entry, and for each part of it (a text or markdown reply over 2048 bytes is sent as
ordered parts, ``shared.schemas.split``), one script (``services.sender.gates``) asks three
questions: was it sent already (``sent:<id>``, or ``sent:<id>#<k>`` for part k)? Is the app's
circuit closed (``shared.wecom.circuit``)? Do its members have room (``Governor``)? Already sent
→ skip; circuit open or no room → park the entry in ``<prefix>:delayed`` until then (it comes
back as a new outbox entry and resumes at its first unsent part); else send, then mark it sent
(one script, ``services.sender.records``), before the entry is acked: after the last part by
the same script, when the consumer offers that (``Delivery.offer``), else by the consumer.

``enable_duplicate_check`` follows ``SENDER_DUPLICATE_CHECK``: ``redelivery`` (default) sets it
when an earlier attempt may have reached WeCom, which the per-part attempt count in the
request's status hash tells even after the delayed queue; ``always`` on every send; ``off``
never. Transient failures → ``Retry`` with exponential backoff and jitter (then, after
``BUS_MAX_DELIVERIES``, the dead letter); WeCom refusing the app as a whole (45009, config
errors) → the app's circuit opens and the entry waits; WeCom refusing the message → ``Reject``
with WeCom's errcode and a sentence of advice. Every outcome is written to the status hash
``GET /v1/messages/{id}`` reads.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec
from redis.asyncio import Redis

from services.sender.actions import ActionHandler, uploaded
from services.sender.gates import Gate
from services.sender.metrics import CIRCUIT, PARTIAL, SENDS, SKIPPED
from services.sender.records import SENT_TTL, Records
from shared.bus import delayed, names, sendstate
from shared.bus.delivery import Delivery, Output, Reject, Retry
from shared.bus.scripts import TickScripts, Wait
from shared.bus.tally import Tally
from shared.logs import TRACE_ID
from shared.schemas.envelope import OutboxEntry, decode_outbox
from shared.schemas.outbound import SendRequest, encode_send_request, split_request
from shared.tracing import span
from shared.wecom import circuit
from shared.wecom.client import SendResult, WeComClient
from shared.wecom.errors import PermanentAPIError, WeComAPIError, WeComUnavailableError
from shared.wecom.governor import Governor, counted_members, seconds_to_midnight

__all__ = ["SENT_TTL", "OutboxHandler", "show_circuit"]

log = logging.getLogger("wecom_bus.sender")

DuplicateCheck = Literal["redelivery", "always", "off"]


def show_circuit(app: str, state: str) -> None:
    """Set the circuit gauge of ``app`` to ``state`` (one of its three label values is 1)."""
    for name in ("closed", "open", "probing"):
        CIRCUIT.labels(app, name).set(1 if name == state else 0)


class _Later(Exception):
    """Internal: park the entry in the delayed queue for ``wait`` seconds."""

    def __init__(self, wait: float, reason: str, errcode: int = 0) -> None:
        super().__init__(reason)
        self.wait, self.reason, self.errcode = wait, reason, errcode
        self.attempted = 0  # the part whose send WeCom refused, so that it is counted


class _Part(msgspec.Struct, frozen=True):
    """One message of a request: its number (1-based), its sent mark and its governor id."""

    k: int
    request: SendRequest
    mark: str
    rid: str


class OutboxHandler:
    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str,
        clients: Mapping[str, WeComClient],
        governor: Governor,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        rate_limited_waits: Sequence[float] = (60.0, 3600.0),
        probe_interval: float = 60.0,
        probe_lease: float = 30.0,
        probe_recheck: float = 1.0,
        duplicate_check: DuplicateCheck = "redelivery",
        max_deliveries: int = 5,
        wait: Wait | None = None,
        actions: ActionHandler | None = None,
        tally: Tally | None = None,
    ) -> None:
        self.actions = actions  # the outbox's action entries (services.sender.actions)
        self.redis = redis
        self.tally = tally if tally is not None else Tally("sends")  # per-minute, for the console
        self.prefix = prefix
        self.clients = clients
        self.governor = governor
        self.clock = governor.clock
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        # 45009: WeCom blocks the app for a minute, an hour, or the rest of its day.
        self.rate_limited_waits = tuple(rate_limited_waits)
        self.probe_interval = probe_interval
        self.probe_lease = probe_lease
        self.probe_recheck = probe_recheck
        self.duplicate_check = duplicate_check
        self.max_deliveries = max_deliveries
        self._sent: dict[str, Any] = {}  # app -> its wecom_sender_sends{errcode="0"} child
        ticks = TickScripts(redis)  # a tick's gates and records: one round trip
        self._gate = Gate(redis, ticks)  # services.sender.gates
        self._record = Records(redis, prefix, ticks, wait)  # services.sender.records

    def backoff(self, attempt: int) -> float:
        """Exponential with full jitter, capped."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def __call__(self, delivery: Delivery) -> Sequence[Output]:
        if b"action" in delivery.fields and self.actions is not None:  # recall, card update…
            return await self.actions(delivery)
        raw = delivery.fields.get(b"data", b"")
        try:
            entry = decode_outbox(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Reject(f"undecodable outbox entry: {exc}") from None
        TRACE_ID.set(entry.trace_id)  # this delivery's task: its logs carry it
        client = self.clients.get(entry.app)
        if client is None:
            await self._dead(entry, None, "this sender has no such app; check the apps file")
            raise Reject(f"unknown app {entry.app!r}: not configured in this sender")
        if entry.upload is not None and not await self.redis.exists(
            names.sent(self.prefix, entry.id)
        ):
            entry = await self._upload(entry, client, delivery)
        parts = self._parts(entry)
        if len(parts) > 1 and await self.redis.exists(names.sent(self.prefix, entry.id)):
            SKIPPED.labels(entry.app).inc()
            return []
        results: list[SendResult] = []
        try:
            for part in parts:
                results.append(await self._deliver(delivery, entry, client, part, results, parts))
        except _Later as later:
            await self._defer(raw, entry, later, names.partition_of(delivery.stream, self.prefix))
        return []

    async def _upload(
        self, entry: OutboxEntry, client: WeComClient, delivery: Delivery
    ) -> OutboxEntry:
        """The attachment uploaded (services.sender.actions.uploaded), failures as sends'."""
        try:
            return await uploaded(self.redis, self.prefix, client, entry)
        except PermanentAPIError as exc:
            await self._dead(entry, exc.errcode, exc.advice)
            raise Reject(f"media/upload errcode {exc.errcode}: {exc.advice}") from None
        except (WeComAPIError, WeComUnavailableError) as exc:
            first = self._parts(entry)[0]  # an attachment is one part
            raise await self._retry(
                entry, first, delivery, "media/upload failed", exc, False
            ) from None

    def _parts(self, entry: OutboxEntry) -> list[_Part]:
        pieces = split_request(entry.request)
        if len(pieces) == 1:
            return [_Part(1, pieces[0], names.sent(self.prefix, entry.id), entry.id)]
        return [
            _Part(k, piece, names.sent_part(self.prefix, entry.id, k), f"{entry.id}#{k}")
            for k, piece in enumerate(pieces, 1)
        ]

    async def _deliver(
        self,
        delivery: Delivery,
        entry: OutboxEntry,
        client: WeComClient,
        part: _Part,
        done: list[SendResult],
        parts: list[_Part],
    ) -> SendResult:
        """Send one part unless it was sent already; raises _Later when it has to wait."""
        about: dict[str, str | int] = {
            "wecom_bus.app": entry.app,
            "wecom_bus.request_id": entry.id,
            "wecom_bus.part": part.k,
        }
        with span("sender.governor", about):
            earlier, probe, tries = await self._open(entry, part, delivery)
        if earlier is not None:
            SKIPPED.labels(entry.app).inc()
            return earlier
        # An earlier attempt (counted with its outcome) or an earlier delivery may have reached
        # WeCom; this attempt is counted with its own outcome (_record, _retry, _defer, _dead).
        redelivered = tries > 0 or delivery.delivery_count > 1
        with span("sender.send", about):
            result = await self._send(client, entry, part, redelivered, probe, delivery)
        if probe and await circuit.close(self.redis, self.prefix, entry.app):
            show_circuit(entry.app, "closed")
            log.info("circuit closed: WeCom accepts the app again", extra={"app": entry.app})
        if part.k < len(parts):
            await self._record(entry.id, part.k, part.mark, result, None)
        else:  # the last: the record acks the entry too, when the consumer offers it
            await self._record(entry.id, part.k, part.mark, result, [*done, result], delivery)
        self._report(entry, result)
        return result

    async def _open(
        self, entry: OutboxEntry, part: _Part, delivery: Delivery
    ) -> tuple[SendResult | None, bool, int]:
        """(the earlier result when already sent, whether this send is the circuit's probe,
        attempts at this part so far); raises _Later when the circuit or the governor says
        wait. One script (services.sender.gates), shared round trip: with the consumer's next
        read when it is about to read (``AckOffer.ride``)."""
        members = counted_members(part.request.touser)
        gov = self.governor.acquire_call(entry.app, members, part.rid)
        gate = circuit.admit_call(
            self.prefix, entry.app, self.clock(), self.probe_lease, self.probe_recheck
        )
        tries = (names.status(self.prefix, entry.id), sendstate.attempts_field(part.k))
        ride = delivery.offer.ride if delivery.offer is not None else None
        found = await self._gate(part.mark, tries, gate, gov, ride)
        if found.mark is not None:
            record = msgspec.json.decode(found.mark, type=dict[str, Any])
            return SendResult.from_payload(record), False, 0
        if found.admit > 0:
            raise _Later(found.admit / 1000, "the app's circuit is open")
        if gov is not None and (gov_wait := self.governor.wait_from(entry.app, found.acquired)):
            raise _Later(gov_wait, "a member's rate limit")
        return None, found.admit == -1, found.tries

    def _with_duplicate_check(self, request: SendRequest, redelivered: bool) -> SendRequest:
        wanted = self.duplicate_check == "always" or (
            self.duplicate_check == "redelivery" and redelivered
        )
        if wanted and not request.enable_duplicate_check:
            # It may have reached WeCom before a crash or a timeout: let WeCom drop the copy.
            return msgspec.structs.replace(request, enable_duplicate_check=1)
        return request

    async def _send(
        self,
        client: WeComClient,
        entry: OutboxEntry,
        part: _Part,
        redelivered: bool,
        probe: bool,
        delivery: Delivery,
    ) -> SendResult:
        request = self._with_duplicate_check(part.request, redelivered)
        extra = {"trace_id": entry.trace_id, "request_id": entry.id, "app": entry.app}
        try:
            return await client.send(encode_send_request(request))
        except WeComAPIError as exc:
            SENDS.labels(entry.app, str(exc.errcode)).inc()
            self.tally.add(entry.app, str(exc.errcode))
            members = counted_members(request.touser)
            if exc.errcode in circuit.RATE_ERRCODES | circuit.CONFIG_ERRCODES:
                await self.governor.release(entry.app, members, part.rid)
                later = await self._trip(entry, exc, probe)
                later.attempted = part.k
                raise later from None
            if isinstance(exc, PermanentAPIError):
                await self.governor.release(entry.app, members, part.rid)
                if probe and await circuit.close(self.redis, self.prefix, entry.app):
                    show_circuit(entry.app, "closed")  # WeCom judged the message: app is fine
                log.error("send refused by WeCom", extra={**extra, "errcode": exc.errcode})
                await self._dead(entry, exc.errcode, exc.advice, attempted=part.k)
                raise Reject(f"errcode {exc.errcode}: {exc.advice}") from None
            log.warning("send failed, will retry", extra={**extra, "errcode": exc.errcode})
            reason = f"errcode {exc.errcode}"
            raise await self._retry(entry, part, delivery, reason, exc, probe) from None
        except WeComUnavailableError as exc:
            SENDS.labels(entry.app, "unavailable").inc()
            self.tally.add(entry.app, "unavailable")
            log.warning("WeCom unreachable, will retry", extra={**extra, "error": str(exc)})
            reason = "WeCom unreachable"
            raise await self._retry(entry, part, delivery, reason, exc, probe) from None

    async def _trip(self, entry: OutboxEntry, exc: WeComAPIError, probe: bool) -> _Later:
        """Open (or reopen) the app's circuit; the entry waits until the circuit's next probe."""
        now = self.clock()
        rate = exc.errcode in circuit.RATE_ERRCODES
        waits = (
            [*self.rate_limited_waits, max(seconds_to_midnight(now), self.rate_limited_waits[-1])]
            if rate
            else [self.probe_interval]
        )
        changed = await circuit.trip(
            self.redis,
            self.prefix,
            entry.app,
            reason="rate_limited" if rate else "config",
            errcode=exc.errcode,
            advice=exc.advice,
            probe=probe,
            waits=waits,
            now=now,
        )
        state = await circuit.read(self.redis, self.prefix, entry.app, now=now)
        if changed:
            show_circuit(entry.app, state.state)
            log.warning(
                "circuit open: the app's sends are paused",
                extra={
                    "app": entry.app,
                    "errcode": exc.errcode,
                    "reason": state.reason,
                    "level": state.level,
                    "until": state.until,
                    "advice": exc.advice,
                },
            )
        wait = max((state.until or now) - now, 0.05)
        return _Later(wait, f"the app's circuit is open (errcode {exc.errcode})", exc.errcode)

    async def _retry(
        self,
        entry: OutboxEntry,
        part: _Part,
        delivery: Delivery,
        reason: str,
        exc: WeComAPIError | WeComUnavailableError,
        probe: bool,
    ) -> Retry:
        """The Retry to raise, with the request's state: delayed, or dead on the last try."""
        if probe:
            await circuit.release_probe(self.redis, self.prefix, entry.app)
        defer = self.backoff(delivery.delivery_count)
        code = exc.errcode if isinstance(exc, WeComAPIError) else None
        async with self.redis.pipeline(transaction=False) as pipe:
            sendstate.attempt(pipe, self.prefix, entry.id, part.k)
            if delivery.delivery_count >= self.max_deliveries:
                sendstate.dead(pipe, self.prefix, entry.id, code, exc.advice)
            else:
                until = self.clock() + defer
                sendstate.delayed(pipe, self.prefix, entry.id, until, reason, code or 0)
            await pipe.execute()
        return Retry(defer, reason)

    async def _defer(self, raw: bytes, entry: OutboxEntry, later: _Later, part: str) -> None:
        """Park the entry in partition ``part``'s delayed queue (acked here; back as a new entry).
        The state first (another slot on a cluster): a crash in between leaves it pending."""
        until = self.clock() + later.wait
        async with self.redis.pipeline(transaction=False) as pipe:
            sendstate.delayed(pipe, self.prefix, entry.id, until, later.reason, later.errcode)
            if later.attempted:  # it waits after an attempt (WeCom refused the app)
                sendstate.attempt(pipe, self.prefix, entry.id, later.attempted)
            await pipe.execute()
        await delayed.schedule(self.redis, part, raw, until, member_id=entry.id)
        log.info(
            "send delayed",
            extra={
                "trace_id": entry.trace_id,
                "request_id": entry.id,
                "wait": round(later.wait, 1),
                "reason": later.reason,
            },
        )

    async def _dead(
        self, entry: OutboxEntry, errcode: int | None, advice: str, *, attempted: int = 0
    ) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            if attempted:
                sendstate.attempt(pipe, self.prefix, entry.id, attempted)
            sendstate.dead(pipe, self.prefix, entry.id, errcode, advice)
            await pipe.execute()

    def _report(self, entry: OutboxEntry, result: SendResult) -> None:
        sent = self._sent.get(entry.app)
        if sent is None:  # the labelled child once per app, not a label lookup per send
            sent = self._sent[entry.app] = SENDS.labels(entry.app, "0")
        sent.inc()
        self.tally.add(entry.app, "0")
        if not result.partial:
            return
        for kind in ("invaliduser", "invalidparty", "invalidtag", "unlicenseduser"):
            if bad := getattr(result, kind):
                PARTIAL.labels(entry.app, kind).inc(len(bad))
                log.warning(
                    "some recipients were not reached",
                    extra={"trace_id": entry.trace_id, "request_id": entry.id, kind: bad},
                )
