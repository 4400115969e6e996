"""The sink's acknowledgement rules that need no ClickHouse: a changelog write that failed
is fatal (nothing it covers is ever acknowledged, the worker is told to stop)."""

from __future__ import annotations

import asyncio

from tokenbrake.streams.sink.buffer import SinkBuffer


class RecordingWriter:  # stands in for the ClickHouse writer: these tests are about acks
    def __init__(self) -> None:
        self.batches = 0

    def write(self, batch) -> None:  # noqa: ANN001
        self.batches += 1

    def close(self) -> None:
        pass


def test_a_failed_changelog_write_stops_acknowledging_and_reports_fatal():
    async def scenario() -> tuple[list[str], list[BaseException], SinkBuffer, bool, bool]:
        acked: list[str] = []
        fatal: list[BaseException] = []
        sink = SinkBuffer(RecordingWriter(), 1, 0.0, 100, 1.0, on_fatal=fatal.append)
        ok = asyncio.get_running_loop().create_future()
        ok.set_result(None)
        sink.add([(b"{}", "0.000", [("row-1",)])], [], [], lambda: acked.append("first"), durable=[ok])
        first = await sink.flush()
        failed = asyncio.get_running_loop().create_future()
        failed.set_exception(RuntimeError("broker gone"))
        sink.add([(b"{}", "0.000", [("row-2",)])], [], [], lambda: acked.append("second"), durable=[failed])
        second = await sink.flush()
        sink.add([(b"{}", "0.000", [("row-3",)])], [], [], lambda: acked.append("third"))
        await sink.maybe_flush()
        await sink.flush()
        sink.close()
        return acked, fatal, sink, first, second

    acked, fatal, sink, first, second = asyncio.run(scenario())
    assert first is True and second is False
    assert acked == ["first"]  # neither the failed chunk nor anything after it
    assert [str(e) for e in fatal] == ["broker gone"]
    assert sink.stats()["fatal"] is True and "changelog write failed" in sink.stats()["last_error"]
    assert sink.writer.batches == 2  # no write is retried after the fatal error


def test_a_flush_is_due_by_recorded_rows_not_by_the_rollup_totals_riding_along():
    """A chunk's changed totals (thousands of minute buckets with many scopes) must not start
    a flush per chunk by themselves: each flush rewrites the same buckets, so flushes of one
    chunk cost the writer more per event than flushes of several."""
    sink = SinkBuffer(RecordingWriter(), 4, 3600.0, 100, 1.0)
    totals = {f"m|1|t{i}": ([1, 1, 0, 0, 0, 0, 0, 0, i], 1) for i in range(10)}
    sink.add([(b"[]", "0.000", [("row",)] * 3)], [], [], lambda: None, totals)
    assert len(sink._batch) == 13 and sink._batch.recorded_rows == 3
    assert not sink.due()  # 3 events recorded: not yet, however many totals they changed
    sink.add([], [("control",)], [], lambda: None)
    assert sink.due()  # 3 usage rows and a control
    sink.close()
