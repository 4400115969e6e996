"""KillSwitch: obey control events inside the service, in microseconds.

``start()`` reads the compacted control topic from the beginning (so it knows every
scope's current state), then follows it in the background. ``decide()`` is a few dict
lookups: the most specific unexpired control wins (user over feature over model over
tenant); an ``allow`` clears its scope.

What it accepts is decided by :class:`clients.control_gate.ControlGate`: signed by a key of
its keyring, not dated beyond ``max_future_skew_s`` ahead, and newer (per-scope sequence)
than the control it holds for that scope. Everything else is ignored and counted
(``ks.ignored[reason]``, ``ks.rejected`` in total), so whoever can write to the topic but
holds no signing key can neither forge a control nor replay an old one. Expiry is enforced
here: a control stops applying at its ``expires_at``, and an expired one never applies.

Failure mode is explicit: while the view is stale (never loaded, or no contact with the
broker for ``max_staleness_s``) decisions are ``allow`` (fail-open, the default) or
``block`` (``fail_closed=True``), with the reason saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from tokenbrake.clients.control_gate import ControlGate, Ignored, expires_ms
from tokenbrake.clients.reporter import hash_user
from tokenbrake.clients.security import KafkaSecurity, connection_kwargs
from tokenbrake.schemas.common import dollars
from tokenbrake.schemas.control import ControlEvent, scope_key
from tokenbrake.schemas.sequence import wall_clock_ms
from tokenbrake.schemas.signing import DEV_SIGNING_KEY, parse_keyring

log = logging.getLogger("tokenbrake.killswitch")

#: The worker's development key; production sets its own.
DEV_KEYS = DEV_SIGNING_KEY


class TokenBucket:
    """Local rate limiter for a throttled scope: ``max_rps`` tokens per second, burst of one second."""

    __slots__ = ("rate", "capacity", "tokens", "stamp")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def admit(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # allow | throttle | downgrade | block
    reason: str
    scope: str | None = None
    max_rps: float | None = None
    downgrade_to: str | None = None
    bucket: TokenBucket | None = field(default=None, repr=False, compare=False)

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    def model(self, requested: str) -> str:
        """The model to call: the downgrade target when downgraded, else ``requested``."""
        return self.downgrade_to if self.action == "downgrade" and self.downgrade_to else requested

    def admit(self) -> bool:
        """May this call go ahead now? False when blocked or over the throttle rate."""
        if self.action == "block":
            return False
        return self.bucket.admit() if self.bucket is not None else True


ALLOW = Decision("allow", "no control applies")


class KillSwitch:
    """A service's view of the control topic: whether a call may go ahead, and on which model.

    It reads the compacted control topic in the background, keeps the latest verified control
    per scope (signature, sequence and expiry checked by its :class:`ControlGate`), and answers
    :meth:`decide` from memory, without a network call on the request path. ``fail_closed``
    chooses what a call gets after ``max_staleness_s`` without word from the broker.

    Parameters
    ----------
    keys: the keyring, ``"k1:secret,k2:secret"`` or ``{key_id: secret}``; revoking a key is
        removing it from here.
    user_id_salt, user_hasher: how the service's ``UsageReporter`` hashes user ids (its salt,
        or a function); ``decide(..., user=raw_id)`` hashes the same way so user-scoped
        controls match.
    max_future_skew_s: records dated further ahead of this host's clock are ignored.
    accept_unsequenced: order records written before sequences existed by ``issued_at``
        (True), or ignore them (False, once the topic holds none).
    wall_clock_ms: the clock expiry and skew are judged by (tests pass their own).
    security: TLS/SASL for the broker (``clients.KafkaSecurity``); None: plaintext.
    fetch_max_wait_ms: how long the broker may hold a fetch while no control arrives (1-5000).
        Kafka answers as soon as a record arrives, so this only bounds how often an idle kill
        switch polls: 50 (the default) is 20 fetches a second per instance; a large fleet on
        Kafka can take 500. The embedded broker answers only at the end of the wait, so there
        it is also how late a control can be seen.
    """

    def __init__(self, bootstrap: str, topic: str = "tokenbrake.control", *, keys: str | dict[str, bytes] = DEV_KEYS,
                 fail_closed: bool = False, max_staleness_s: float = 30.0, user_id_salt: str | bytes | None = None,
                 user_hasher: Callable[[str], str] | None = None, max_future_skew_s: float = 300.0,
                 accept_unsequenced: bool = True, wall_clock_ms: Callable[[], int] = wall_clock_ms,
                 security: KafkaSecurity | None = None, fetch_max_wait_ms: int = 50) -> None:
        if not 1 <= fetch_max_wait_ms <= 5000:
            raise ValueError(f"fetch_max_wait_ms must be 1-5000, not {fetch_max_wait_ms}")
        self.bootstrap, self.topic = bootstrap, topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.security = security
        self.keyring = parse_keyring(keys) if isinstance(keys, str) else dict(keys)
        self.fail_closed, self.max_staleness_s = fail_closed, max_staleness_s
        if user_hasher is None and user_id_salt:
            salt = user_id_salt.encode() if isinstance(user_id_salt, str) else user_id_salt
            user_hasher = lambda raw: hash_user(raw, salt)  # noqa: E731 - the reporter's hash, salted
        self._hash_user = user_hasher
        self.gate = ControlGate(self.keyring, max_future_skew_ms=int(max_future_skew_s * 1000),
                                accept_unsequenced=accept_unsequenced)
        self._now_ms = wall_clock_ms
        self._controls: dict[str, ControlEvent] = {}
        self._overrides: dict[str, ControlEvent] = {}  # allows with a deadline (see overrides())
        self._buckets: dict[str, TokenBucket] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._loaded = False
        self._last_contact = 0.0
        self.applied = 0
        self.rejected = 0  # every record ignored, whatever the reason (see ignored)
        self.ignored: Counter[str] = Counter()  # Ignored reason -> records
        self.on_change: list = []  # callables(ControlEvent), e.g. for logging or tests
        self._last_ignored_log: dict[Ignored, float] = {}
        # callables(record key | None, ControlEvent | None, Ignored): the worker re-asserts the
        # scope a refused record was written under (on a compacting topic it would be the last)
        self.on_ignored: list = []

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, timeout_s: float = 30.0) -> None:
        consumer = self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                                     auto_offset_reset="earliest", group_id=None,
                                                     fetch_max_wait_ms=self.fetch_max_wait_ms,
                                                     **connection_kwargs(self.security))
        try:
            tps = await self._read_history(consumer, time.monotonic() + timeout_s)
        except BaseException:  # no broker, a refused certificate, a timeout, stop() meanwhile: leave nothing open
            await consumer.stop()
            if self._consumer is consumer:
                self._consumer = None
            raise
        self._loaded = True
        self._last_contact = time.monotonic()
        self._task = asyncio.create_task(self._follow(tps), name="tokenbrake-killswitch")

    async def _read_history(self, consumer: AIOKafkaConsumer, deadline: float) -> list[TopicPartition]:
        """Connect, find the topic's partitions and read its whole compacted history (a
        :meth:`stop` meanwhile stops ``consumer``, which ends this with aiokafka's error)."""
        await consumer.start()
        parts = None
        while not parts and time.monotonic() < deadline:
            parts = consumer.partitions_for_topic(self.topic)
            if not parts:
                await consumer._client.force_metadata_update()  # topic may be new
                parts = consumer.partitions_for_topic(self.topic)
                if not parts:
                    await asyncio.sleep(0.2)
        if not parts:
            raise RuntimeError(f"control topic {self.topic!r} not found at {self.bootstrap}")
        tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        while True:  # read the whole compacted history, then serve
            if time.monotonic() > deadline:
                raise TimeoutError("control topic not read to its end in time")
            if self._consumer is not consumer:
                raise RuntimeError("the kill switch was stopped while it was starting")
            batch = await consumer.getmany(timeout_ms=300)
            self._apply_batch(batch)
            # an empty fetch past the reported end: some brokers report the end per batch
            if not batch and await self._caught_up(consumer, end):
                return tps

    async def _caught_up(self, consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
        for tp, offset in end.items():
            if await consumer.position(tp) < offset:
                return False
        return True

    async def _follow(self, tps: list[TopicPartition]) -> None:
        assert self._consumer is not None
        last_check = 0.0
        while True:
            try:
                self._apply_batch(await self._consumer.getmany(timeout_ms=100))
                if time.monotonic() - last_check > 2.0:  # prove the broker still answers
                    await asyncio.wait_for(self._consumer.end_offsets(tps), 5.0)
                    last_check = time.monotonic()
                    self._last_contact = last_check
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - stay alive; staleness tells the caller
                log.warning("control topic unreachable: %s", exc)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def __aenter__(self) -> KillSwitch:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- applying control events ----------------------------------------------------------------
    def _apply_batch(self, batch: dict) -> None:
        for records in batch.values():
            for record in records:
                self.apply(record.value, record.key)

    def apply(self, value: bytes | None, key: bytes | None = None) -> bool:
        """Take one record of the control topic (``key``: its message key, the scope key it
        was written under); True when it changed the view."""
        if value is None and key:  # a tombstone: the view keeps what it holds (see Ignored.TOMBSTONE)
            self._ignore(None, Ignored.TOMBSTONE, key)
            return False
        if not value:
            return False
        control, ignored = self.gate.judge(self.gate.parse(value), self._now_ms())
        if ignored is not None:
            self._ignore(control, ignored, key)
            return False
        assert control is not None
        key = control.scope.key()
        self._buckets.pop(key, None)
        if control.action == "allow":
            self._controls.pop(key, None)
            if control.expires_at is not None:  # an override until then (see overrides())
                self._overrides[key] = control
            else:
                self._overrides.pop(key, None)
        else:
            self._overrides.pop(key, None)
            self._controls[key] = control
            if control.action == "throttle" and control.max_rps:
                self._buckets[key] = TokenBucket(control.max_rps)
        self.applied += 1
        self._last_contact = time.monotonic()
        for callback in self.on_change:
            callback(control)
        return True

    def _ignore(self, control: ControlEvent | None, reason: Ignored, record_key: bytes | None) -> None:
        self.rejected += 1
        self.ignored[reason] += 1
        if reason is Ignored.EXPIRED:  # the scope's latest word, already past: nothing applies
            assert control is not None
            key = control.scope.key()
            self._controls.pop(key, None)
            self._overrides.pop(key, None)
            self._buckets.pop(key, None)
        elif time.monotonic() - self._last_ignored_log.get(reason, -60.0) >= 60.0:  # a flood logs once a minute
            self._last_ignored_log[reason] = time.monotonic()
            log.warning("ignored a control event (%s; %d so far)", reason.value, self.ignored[reason], extra={
                "reason": reason.value, "scope": control.scope.key() if control is not None else None,
                "key_id": control.key_id if control is not None else None,
                "seq": control.seq if control is not None else None})
        written_under = record_key.decode("utf-8", "replace") if record_key else None
        for callback in self.on_ignored:
            callback(written_under, control, reason)

    def last_seq(self, scope: str) -> int | None:
        """The highest sequence accepted for the scope key (``ControlSigner``'s ``last_seen``)."""
        return self.gate.last_seq(scope)

    # -- deciding -------------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        """The topic's history has been read to its end (``start`` returned)."""
        return self._loaded

    @property
    def staleness_s(self) -> float:
        """Seconds since the view was last known to be current (inf before start())."""
        return time.monotonic() - self._last_contact if self._loaded else float("inf")

    def decide(self, tenant_id: str, feature_id: str | None = None, user: str | None = None,
               model: str | None = None, *, user_hash: str | None = None) -> Decision:
        """The decision for one call. ``user`` is the raw user id, hashed here as the reporter
        hashes it (needs ``user_id_salt`` or ``user_hasher``); ``user_hash`` is an id already
        hashed (or the id exactly as the controls name it). Raises ValueError only for a
        ``user`` given to a KillSwitch that cannot hash it (a wiring mistake, not bad data)."""
        if user is not None and user_hash is None:
            if self._hash_user is None:
                raise ValueError("KillSwitch.decide(user=...) needs the reporter's user_id_salt (or user_hasher) "
                                 "to match user-scoped controls; or pass user_hash=")
            if not isinstance(user, str):
                raise TypeError(f"user must be the raw user id as a str (as given to the reporter), not {type(user)}")
            user_hash = self._hash_user(user)
        if self.staleness_s > self.max_staleness_s:
            return Decision("block" if self.fail_closed else "allow",
                            f"control view stale ({self.staleness_s:.0f}s): failing "
                            f"{'closed' if self.fail_closed else 'open'}")
        if not self._controls:
            return ALLOW
        now = None
        for u in (user_hash, None) if user_hash else (None,):
            for f in (feature_id, None) if feature_id else (None,):
                for m in (model, None) if model else (None,):
                    key = scope_key(tenant_id, f, u, m)
                    control = self._controls.get(key)
                    if control is None:
                        continue
                    deadline = expires_ms(control)
                    if deadline is not None:
                        now = now or self._now_ms()
                        if deadline <= now:
                            continue
                    return Decision(control.action, _reason(control), key, control.max_rps,
                                    control.downgrade_to, self._buckets.get(key))
        return ALLOW

    def controls(self) -> dict[str, ControlEvent]:
        """Current unexpired control per scope (what ``tokenbrake control list`` prints)."""
        now = self._now_ms()
        return {key: c for key, c in self._controls.items() if (expires_ms(c) or now + 1) > now}

    def overrides(self) -> dict[str, ControlEvent]:
        """``allow`` controls with a deadline still ahead, per scope: an operator's override of
        every rule on the scope until then (``tokenbrake control allow --ttl``). They change
        no decision here (an allow is the absence of a control); ``control list`` shows them."""
        now = self._now_ms()
        return {key: c for key, c in self._overrides.items() if (expires_ms(c) or 0) > now}


def _reason(c: ControlEvent) -> str:
    """For people: rounded dollars and which rule (the event carries the exact amounts)."""
    r = c.reason
    if r.rule == "operator":
        return f"operator ({r.period}): {r.detail}" if r.detail else f"operator ({r.period})"
    detail = f" ({r.detail})" if r.detail else ""
    return f"{r.rule} {r.period}: {dollars(r.observed)} of {dollars(r.threshold)}{detail}"
