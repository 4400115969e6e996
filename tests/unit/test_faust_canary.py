"""Canary: the Faust and aiokafka internals tokenbrake patches or reads (all in
streams/faust_internals/) still look as they did when the patches were written. An upgrade
that changes one of them fails here, at test time,
instead of silently in production. When this fails: read the named internal in the new
version, adapt (or drop) the patch, then update the expectation below."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aiokafka
import faust
import pytest
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.stores import memory
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport.drivers import aiokafka as faust_aiokafka

from tokenbrake.streams.faust_internals import patches as compat

#: the versions the patches were written against (pinned exactly in pyproject.toml)
PINNED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}

#: (owner, attribute, parameter names) of every internal called or replaced
SIGNATURES = [
    (faust_aiokafka.AIOKafkaConsumerThread, "_highwaters", ["self", "partitions"]),
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer", ["self", "transport"]),
    (faust_aiokafka.AIOKafkaConsumerThread, "seek_to_committed", ["self"]),
    (faust_aiokafka.AIOKafkaConsumerThread, "call_thread", ["self", "fun", "args", "kwargs"]),
    (faust_consumer.Consumer, "wait_first", ["self", "coros", "timeout"]),
    (faust_consumer.Consumer, "_new_offset", ["self", "tp"]),
    (faust_consumer.Consumer, "_add_gap", ["self", "tp", "offset_from", "offset_to"]),
    (faust_consumer.Consumer, "seek", ["self", "partition", "offset"]),
    (aiokafka.AIOKafkaConsumer, "beginning_offsets", ["self", "partitions"]),
    (faust_consumer.Consumer, "track_message", ["self", "message"]),
    (faust_aiokafka.Producer, "_ensure_producer", ["self"]),
    (aiokafka.AIOKafkaConsumer, "seek_to_beginning", ["self", "partitions"]),
    (aiokafka.AIOKafkaProducer, "create_batch", ["self"]),
    (aiokafka.AIOKafkaProducer, "send_batch", ["self", "batch", "topic", "partition"]),
    (BatchBuilder, "append", ["self", "timestamp", "key", "value", "headers"]),
    (faust.App, "create_event", ["self", "key", "value", "headers", "message"]),
    (faust_producer.ProducerBuffer, "wait_until_ebb", ["self"]),
]


@pytest.mark.parametrize("package", sorted(PINNED))
def test_the_pinned_versions_are_installed(package):
    assert version(package) == PINNED[package], f"{package} changed: re-check streams/faust_internals/"


@pytest.mark.parametrize(("owner", "name", "params"), SIGNATURES, ids=[f"{o.__name__}.{n}" for o, n, _ in SIGNATURES])
def test_each_internal_still_has_its_signature(owner, name, params):
    target = inspect.getattr_static(owner, name)
    target = getattr(target, "__func__", target)
    if getattr(target, "__module__", "") == compat.__name__:  # replaced by our patch: check the original
        target = {"_highwaters": compat._original, "_new_offset": compat._original_new_offset,
                  "wait_first": compat._original_wait_first,
                  "seek_to_committed": compat._original_seek_to_committed,
                  "_create_worker_consumer": compat._original_create, "_add_gap": compat._original_add_gap,
                  "create_event": compat._original_create_event,
                  "wait_until_ebb": compat._original_wait_until_ebb}[name]
    assert list(inspect.signature(target).parameters) == params


def test_the_state_faust_keeps_where_the_patches_read_it():
    """Attributes read by the patches and the worker, set in constructors (not visible on the
    class): checked in the constructors' code."""
    consumer_init = faust_consumer.Consumer.__init__.__code__.co_names
    for attribute in ("_acked", "_committed_offset", "_gap", "_acked_index", "_read_offset"):
        assert attribute in consumer_init, attribute
    store_init = memory.Store.__post_init__.__code__.co_names  # the worker shares these two dicts
    assert "data" in store_init and "_key_partition" in store_init
    assert "_fetch_max_wait_ms" in aiokafka.AIOKafkaConsumer.__init__.__code__.co_names
    source = inspect.getsource(compat._original_new_offset)
    assert "consecutive_numbers" in source and "committed_offset" in source  # the rule patch 5 guards
    assert "if offset and offset > 0" in inspect.getsource(aiokafka.AIOKafkaConsumer.seek_to_committed)  # patch 6
    drain = inspect.getsource(faust_consumer.Consumer._drain_messages)  # patch 7: the fetch loop adds the gaps
    assert "self._add_gap(tp, r_offset + 1, offset)" in drain
    assert "_thread" in faust_consumer.ThreadDelegateConsumer.__init__.__code__.co_names  # patches.bootstrap_of
    # patch 8: the channels and queues the delivery check reads, the buffer's own rule
    assert "_topics" in faust.transport.conductor.Conductor.__init__.__code__.co_names
    assert "_queue" in inspect.getsource(faust.channels.Channel.queue.fget)
    ebb = inspect.getsource(compat._original_wait_until_ebb)
    assert "self.size > self.max_messages" in ebb
    assert "self.pending._queue" in inspect.getsource(faust_producer.ProducerBuffer.size.fget)
