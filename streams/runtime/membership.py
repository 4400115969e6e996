"""The worker's place in its consumer group: a generation counter that moves with every
completed rebalance (state decided on an older generation is not persisted; see the worker)
and one log line per revocation and assignment, naming the usage partitions."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("tokenbrake.worker")


def install_membership(runtime: Any) -> None:
    app, topic = runtime.app, runtime.settings.topic_usage

    def mine(tps: Any) -> list[int]:
        return sorted(tp.partition for tp in tps if tp.topic == topic)

    @app.on_rebalance_complete.connect
    async def _rebalanced(sender: Any, **kwargs: Any) -> None:
        runtime.generation += 1

    @app.on_partitions_revoked.connect
    async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        log.info("partitions revoked", extra={"partitions": mine(revoked), "generation": runtime.generation})

    @app.on_partitions_assigned.connect
    async def _assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        log.info("partitions assigned", extra={"partitions": mine(assigned), "generation": runtime.generation})
