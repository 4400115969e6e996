"""Every private Faust (faust-streaming 0.15.3) and aiokafka (0.14.0) internal tokenbrake
depends on, in this one folder, with versions pinned exactly in ``pyproject.toml`` and a
canary test (``tests/unit/test_faust_canary.py``) that fails on an upgrade that changes one.

What each is for, and what would let it go:

- ``patches`` (applied once when the app is built):
  1. exact changelog end offsets (Faust trusts the broker's high-water mark, which the
     embedded broker reports per record batch) -- goes with a broker that reports exact ends;
  2. the consumer's fetch wait (Faust hard-codes 1.5 s) -- goes when Faust makes it a setting;
  3. the consumer thread's shutdown wait -- likewise;
  4. delivery without ``wait_first``'s four tasks per message -- goes when Faust's fetch
     loop delivers directly;
  5. commits never skip an unacknowledged message (Faust's head-gap guard is off by one and
     absent for partitions never committed) -- goes with a fixed Faust;
  6. re-reading never-committed partitions after a rebalance (aiokafka's
     ``seek_to_committed`` leaves them where the fetcher is) -- likewise;
  7. no gap taken on trust (Faust's fetch loop counts a jump between offsets as acknowledged,
     and after a seek back a message fetched from the old position makes a false jump) --
     goes when Faust delivers in order after a seek, or checks a gap before counting it.
- ``batches.take_batches``: events taken off the agent's channel queue with the stream
  iterator's bookkeeping (tracking for acks, stale generations), each partition's in offset
  order with no hole (held back and sought back otherwise) -- goes if Faust offers a
  batch API without per-event overhead (``Stream.take`` costs ~200 us per message).
- ``changelog``: the aiokafka producer under Faust's (``Producer._ensure_producer``) and
  changelog records in the JSON form Faust's table recovery reads, packed per partition --
  goes if Faust's tables gain a bulk ``update`` that writes one record per key per call.
- ``end_offsets``: exact end offsets on brokers that report them per record batch (the
  embedded one), and the first record at an offset (tells a real gap from skipped records,
  for ``take_batches``) -- goes with a broker that reports exact ends; the gap probe stays.
- ``offsets.committed_positions``: the consumer's committed offsets, for the lag metric --
  goes if Faust exposes them.
- ``tables.table_dicts``: the memory store's ``data`` and ``_key_partition`` dicts, shared
  with the core's stores so that state is held once -- goes with a Faust store API that
  exposes the partition of a key.
"""
