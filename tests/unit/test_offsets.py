"""faust_internals.end_offsets: the end-offset probe keeps reading through empty fetches (a slow broker)."""

from dataclasses import dataclass

from aiokafka import TopicPartition

from tokenbrake.streams.faust_internals.end_offsets import read_to_high_water

TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


@dataclass
class Record:
    offset: int


class SlowBroker:
    """A consumer over a broker that reports ends per batch and answers the first fetches empty."""

    def __init__(self, logs: dict[TopicPartition, int], empty_fetches: int, high_water_known: bool = True) -> None:
        self.logs, self.empty_fetches, self.high_water_known = logs, empty_fetches, high_water_known
        self.positions: dict[TopicPartition, int] = {}
        self.fetches = 0

    def assign(self, tps):  # noqa: ANN001, ANN201
        self.assigned = list(tps)

    def seek(self, tp, offset):  # noqa: ANN001, ANN201
        self.positions[tp] = offset

    async def getmany(self, *tps, timeout_ms):  # noqa: ANN001, ANN201
        self.fetches += 1
        if self.fetches <= self.empty_fetches:
            return {}
        out = {}
        for tp in tps:
            start, end = self.positions[tp], self.logs[tp]
            if start < end:
                out[tp] = [Record(o) for o in range(start, end)]
                self.positions[tp] = end
        return out

    async def position(self, tp):  # noqa: ANN001, ANN201
        return self.positions[tp]

    def highwater(self, tp):  # noqa: ANN001, ANN201
        return self.logs[tp] if self.high_water_known and self.fetches > self.empty_fetches else None


async def test_empty_fetches_from_a_slow_broker_do_not_end_the_probe():
    broker = SlowBroker({TP0: 120, TP1: 7}, empty_fetches=5)
    reported = {TP0: 101, TP1: 7}  # TP0's last batch holds 100..119: reported as its base offset + 1
    ends = await read_to_high_water(broker, reported, probe_timeout_ms=1, deadline_s=60)
    assert ends == {TP0: 120, TP1: 7} and broker.fetches == 6


async def test_the_probe_stops_at_its_deadline_with_the_reported_ends():
    broker = SlowBroker({TP0: 120}, empty_fetches=10**9)
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # each look at the clock is one second later
        return now[0]

    ends = await read_to_high_water(broker, {TP0: 101}, probe_timeout_ms=1, deadline_s=10, clock=clock)
    assert ends == {TP0: 101} and 3 <= broker.fetches <= 10


async def test_empty_partitions_are_not_probed():
    broker = SlowBroker({TP0: 0}, empty_fetches=0)
    assert await read_to_high_water(broker, {TP0: 0}) == {TP0: 0} and broker.fetches == 0
