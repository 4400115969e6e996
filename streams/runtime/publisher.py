"""Signed controls and alerts out to their topics.

A control goes out only when it changes what the control topic says for its scope (see
streams.emit.topic_latest), signed with the next per-scope sequence after the highest read
back (schemas.sequence). Alerts always go out: the pager dedupes incidents.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tokenbrake.schemas.codec import dumps
from tokenbrake.schemas.control import ControlEvent
from tokenbrake.schemas.sequence import ControlSigner
from tokenbrake.streams.emit.events import Emitted
from tokenbrake.streams.emit.topic_latest import TopicLatest

log = logging.getLogger("tokenbrake.worker")


class Publisher:
    def __init__(self, signer: ControlSigner, control_topic: Any, alert_topic: Any, topic_latest: TopicLatest,
                 meter: Any, stats: dict[str, int]) -> None:
        self.signer, self.control_topic, self.alert_topic = signer, control_topic, alert_topic
        self.topic_latest, self.meter, self.stats = topic_latest, meter, stats
        self._sending: list[asyncio.Future] = []  # the last publish's controls, until on the broker
        self._overdue: list[asyncio.Future] = []  # those a wait gave up on (see delivered)

    async def publish(self, controls: list[ControlEvent], alerts: list[Any]) -> list[ControlEvent]:
        """Returns the controls published (the others said what the topic already says)."""
        published, self._sending = [], []
        for control in controls:
            if self.topic_latest.unchanged(control):
                self.stats["controls_unchanged"] += 1
                continue
            signed = self.signer.issue(control)
            self.topic_latest.sent(signed)
            published.append(control)
            self._sending.append(await self.control_topic.send(key=control.scope.key().encode(), value=dumps(signed)))
            log.info("control issued", extra={"scope": control.scope.key(), "action": control.action,
                                              "downgrade_to": control.downgrade_to, "rule": control.reason.rule})
        for alert in alerts:
            await self.alert_topic.send(key=alert.dedup_key.encode(), value=dumps(alert))
            log.warning("alert %s", alert.summary, extra={"rule": alert.rule, "state": alert.state,
                                                          "severity": alert.severity})
        self.stats["controls"] += len(published)
        self.stats["alerts"] += len(alerts)
        self.meter.published(Emitted(published, alerts))
        return published

    async def delivered(self, timeout_s: float) -> None:
        """Wait, at most ``timeout_s``, until the last publish's controls are on the broker. The
        producer's sender runs on the event loop: a control published in the middle of a batch
        would otherwise leave only when the batch is decided (tens of milliseconds). While the
        controls of an earlier wait that timed out are still not on the broker (it is slow or
        gone), this does not wait again: a storm of controls must not slow deciding by
        ``timeout_s`` each (the producer still sends them, in order)."""
        sending, self._sending = self._sending, []
        if not sending or not all(future.done() for future in self._overdue):
            return
        _, pending = await asyncio.wait(sending, timeout=timeout_s)
        self._overdue = list(pending)
