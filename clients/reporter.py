"""UsageReporter: one usage event per LLM call, off the request path.

``record()`` never blocks and never raises: it validates, hashes the user id, and puts the
event in a bounded buffer. A background task packs events per tenant into JSON-array
messages (size and time triggers) keyed by tenant. When the buffer is full the event is
dropped and counted (``reporter.dropped``), never silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections import Counter, deque
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from tokenbrake.clients.security import KafkaSecurity, connection_kwargs
from tokenbrake.schemas.codec import dumps
from tokenbrake.schemas.outcome import OutcomeEvent
from tokenbrake.schemas.usage import UsageEvent

log = logging.getLogger("tokenbrake.reporter")


def hash_user(user_id: str, salt: bytes) -> str:
    """Keyed hash (HMAC-SHA256, 128 bits shown): stable per salt, not reversible without it."""
    return "h:" + hmac.new(salt, user_id.encode(), hashlib.sha256).hexdigest()[:32]


class UsageReporter:
    """Publishes one usage event per LLM call (and outcome events) from a service, off the
    request path: :meth:`record` validates, hashes the user id with ``user_id_salt`` and
    buffers; a background task sends JSON-array messages keyed by tenant. Start it with
    :meth:`start`, flush and stop it with :meth:`stop`.
    """

    def __init__(self, bootstrap: str, topic: str = "tokenbrake.usage", *, user_id_salt: str | bytes,
                 max_buffer: int = 10_000, batch_size: int = 200, linger_s: float = 0.2,
                 enable_idempotence: bool | None = None, defaults: dict[str, Any] | None = None,
                 security: KafkaSecurity | None = None,
                 outcomes_topic: str = "tokenbrake.outcomes") -> None:
        if not user_id_salt:
            raise ValueError("user_id_salt is required: raw user ids never leave the process")
        self.bootstrap, self.topic, self.outcomes_topic = bootstrap, topic, outcomes_topic
        self._salt = user_id_salt.encode() if isinstance(user_id_salt, str) else user_id_salt
        self.max_buffer, self.batch_size, self.linger_s = max_buffer, batch_size, linger_s
        self._idempotence = enable_idempotence
        self._connection = connection_kwargs(security)  # TLS/SASL, see clients.security
        self._defaults = defaults or {}
        self._buffer: deque[UsageEvent] = deque()
        self._outcomes: deque[OutcomeEvent] = deque()  # shares max_buffer with the usage events
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self.dropped = 0  # buffer full
        self.invalid = 0  # record() called with data the contract rejects
        self.invalid_fields: Counter[str] = Counter()  # ... by the first field at fault
        self.sent = 0
        self.outcomes_sent = 0
        self.failed = 0  # events in messages Kafka did not accept

    async def start(self) -> None:
        self._producer = await self._start_producer()
        self._task = asyncio.create_task(self._run(), name="tokenbrake-reporter")

    async def _start_producer(self) -> AIOKafkaProducer:
        want = True if self._idempotence is None else self._idempotence
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=want,
                                    linger_ms=5, max_request_size=8 << 20, **self._connection)
        try:
            await producer.start()
            return producer
        except KafkaError:
            await producer.stop()
            if self._idempotence is not None or not want:
                raise
        # auto: some brokers (the embedded one) lack idempotent producers; events are deduped
        # by event_id downstream, so plain acks=all loses nothing
        log.warning("broker refused an idempotent producer; continuing with acks=all only")
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                    max_request_size=8 << 20, **self._connection)
        await producer.start()
        return producer

    def record(self, *, tenant_id: str | None = None, feature_id: str | None = None, user_id: str | None = None,
               provider: str | None = None, model: str | None = None, input_tokens: int | None = None,
               output_tokens: int | None = None, **fields: Any) -> bool:
        """Report one call attempt. Returns False (and counts why) when it was not queued; never
        raises, whatever it is given (a missing field, a ``user_id`` that is not a str, ...):
        ``reporter.invalid`` counts them, ``reporter.invalid_fields`` by the first field at fault."""
        try:
            if not isinstance(user_id, str):
                self._invalid("user_id")
                return False
            data = {**self._defaults, **fields}
            data.setdefault("event_id", uuid.uuid4().hex)
            data.setdefault("ts", time.time_ns() // 1_000_000)
            event = UsageEvent(tenant_id=tenant_id, feature_id=feature_id, user_id=hash_user(user_id, self._salt),
                               provider=provider, model=model, input_tokens=input_tokens,
                               output_tokens=output_tokens, **data)
        except ValidationError as exc:
            errors = exc.errors()
            self._invalid(str(errors[0]["loc"][0]) if errors and errors[0].get("loc") else "event")
            return False
        except Exception as exc:  # noqa: BLE001 - never raise into the caller
            self._invalid(type(exc).__name__)
            return False
        if event.model_extra:  # the service's own code: a misspelled field is its mistake, not a new version
            self.invalid += 1
            log.debug("usage event rejected: unknown fields %s", sorted(event.model_extra))
            return False
        return self._enqueue(event)

    def _invalid(self, field: str) -> None:
        self.invalid += 1
        self.invalid_fields[field] += 1
        log.debug("usage event rejected", extra={"field": field})  # never the values: they may hold a raw id

    def record_event(self, event: UsageEvent) -> bool:
        """Report a ready-made event; its ``user_id`` is hashed here too."""
        try:
            event = event.model_copy(update={"user_id": hash_user(event.user_id, self._salt)})
        except Exception:  # noqa: BLE001 - never raise into the caller
            self._invalid("user_id" if isinstance(event, UsageEvent) else "event")
            return False
        return self._enqueue(event)

    def record_outcome(self, *, tenant_id: str, feature_id: str, kind: str, user_id: str | None = None,
                       **fields: Any) -> bool:
        """Report one business outcome (``value`` as a decimal string, ``quality``,
        ``logical_call_ids``, ``session_id``: see :class:`OutcomeEvent`). Never blocks, never
        raises; the user id is hashed like a usage event's. False (and counted) when not queued."""
        try:
            data = dict(fields)
            data.setdefault("outcome_id", uuid.uuid4().hex)
            data.setdefault("ts", time.time_ns() // 1_000_000)
            outcome = OutcomeEvent(tenant_id=tenant_id, feature_id=feature_id, kind=kind,
                                   user_id=None if user_id is None else hash_user(user_id, self._salt), **data)
        except (ValidationError, TypeError, ValueError) as exc:
            self.invalid += 1
            log.debug("outcome rejected: %s", exc)
            return False
        if len(self._buffer) + len(self._outcomes) >= self.max_buffer:
            self.dropped += 1
            return False
        self._outcomes.append(outcome)
        return True

    def _enqueue(self, event: UsageEvent) -> bool:
        if len(self._buffer) >= self.max_buffer:
            self.dropped += 1
            return False
        self._buffer.append(event)
        if len(self._buffer) >= self.batch_size:
            self._wakeup.set()
        return True

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.linger_s)
            self._wakeup.clear()
            await self._send_buffered()

    async def _send_buffered(self) -> None:
        if self._producer is None:
            return
        if self._outcomes:
            await self._send_outcomes()
        if not self._buffer:
            return
        by_tenant: dict[str, list[UsageEvent]] = {}
        while self._buffer:
            event = self._buffer.popleft()
            by_tenant.setdefault(event.tenant_id, []).append(event)
        futures = []
        for tenant, events in by_tenant.items():
            for i in range(0, len(events), self.batch_size):
                chunk = events[i:i + self.batch_size]
                value = dumps([e.model_dump(mode="json", exclude_none=True) for e in chunk])
                try:
                    futures.append((len(chunk), await self._producer.send(self.topic, value, key=tenant.encode())))
                except KafkaError as exc:
                    self.failed += len(chunk)
                    log.error("usage batch not sent: %s", exc)
        for n, fut in futures:
            try:
                await fut
                self.sent += n
            except KafkaError as exc:
                self.failed += n
                log.error("usage batch not acknowledged: %s", exc)

    async def _send_outcomes(self) -> None:
        """One message per outcome, keyed by tenant (outcomes are few next to calls)."""
        assert self._producer is not None
        futures = []
        while self._outcomes:
            o = self._outcomes.popleft()
            try:
                futures.append(await self._producer.send(self.outcomes_topic, dumps(o.model_dump(
                    mode="json", exclude_none=True)), key=o.tenant_id.encode()))
            except KafkaError as exc:
                self.failed += 1
                log.error("outcome not sent: %s", exc)
        for fut in futures:
            try:
                await fut
                self.outcomes_sent += 1
            except KafkaError as exc:
                self.failed += 1
                log.error("outcome not acknowledged: %s", exc)

    async def flush(self) -> None:
        await self._send_buffered()

    async def stop(self) -> None:
        """Flush what is buffered, then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._send_buffered()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def __aenter__(self) -> UsageReporter:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
