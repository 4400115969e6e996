"""Issue 11 (6.): a ClickHouse writer that hangs (frozen, not dead) is a failure after
``sink_write_timeout_s``: counted, reported with its error, the writer process restarted and
nothing acknowledged; the batch is kept for the next try."""

from __future__ import annotations

import asyncio
import socket

from tokenbrake.streams.sink.buffer import SinkBuffer
from tokenbrake.streams.sink.process import SinkProcess


def test_a_hung_clickhouse_write_times_out_and_is_reported():
    silent = socket.socket()  # accepts connections (kernel backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    writer = SinkProcess(f"http://127.0.0.1:{port}", "tokenbrake", timeout_s=2.0)
    acked: list[int] = []
    buffer = SinkBuffer(writer, flush_rows=1, flush_interval_s=0.0, max_rows=1000, retry_max_s=1.0)
    buffer.add([], [("control-row",)], [], lambda: acked.append(1))

    async def scenario() -> bool:
        return await buffer.flush()

    try:
        assert asyncio.run(scenario()) is False
        stats = buffer.stats()
        assert stats["failures"] == 1 and "longer than 2s" in stats["last_error"]
        assert acked == [] and stats["buffered_rows"] == 1  # kept, not acknowledged
        assert writer.pid is None  # the hung child was killed; the next write starts another
    finally:
        buffer.close()
        silent.close()
