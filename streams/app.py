"""The one Faust app. Built from :class:`Settings`; ``streams.worker`` installs the flows."""

from __future__ import annotations

from typing import Any

import faust
from faust.auth import OAuthCredentials, SASLCredentials, SSLCredentials

from tokenbrake.clients.security import KafkaSecurity
from tokenbrake.streams.faust_internals import patches as compat
from tokenbrake.streams.settings import Settings


class RawBytes(faust.Schema):
    """A topic's keys and values as the broker holds them. Faust's ``raw`` serializers give
    the same bytes through its serializer registry, a few microseconds per message on the
    usage topic's hottest path (one event per message)."""

    def loads_key(self, app: faust.App, message: Any, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.key

    def loads_value(self, app: faust.App, message: Any, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.value


def faust_credentials(security: KafkaSecurity) -> Any:
    """The Faust form of ``security`` (its aiokafka driver turns it back into the same kwargs)."""
    context = security.ssl_context()
    if security.sasl_mechanism == "OAUTHBEARER":
        return OAuthCredentials(oauth_cb=security.oauth_token_provider, ssl_context=context)
    if security.sasl_mechanism is not None:
        return SASLCredentials(username=security.username, password=security.password, ssl_context=context,
                               mechanism=security.sasl_mechanism)
    return SSLCredentials(context) if context is not None else None


def build_app(settings: Settings, bootstrap: str) -> faust.App:
    security = settings.kafka_security()
    compat.apply(settings.kafka_fetch_max_wait_ms, settings.shutdown_timeout_s, security.kwargs())
    brokers = ";".join(f"kafka://{hp.strip()}" for hp in bootstrap.split(","))
    return faust.App(
        settings.app_id,
        broker=brokers,
        broker_credentials=faust_credentials(security),
        store="memory://",
        datadir=str(settings.home / "faust"),  # not "<app id>-data" in whatever directory we started in
        autodiscover=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        topic_allow_declare=False,  # runner.worker_topics() creates them first
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=8 * 1024 * 1024,
        producer_max_batch_size=512 * 1024,  # few batches per chunk; below Kafka's 1 MB message.max.bytes
        broker_commit_interval=1.0,
        stream_buffer_maxsize=max(4096, settings.batch_max * 2),
        stream_wait_empty=False,  # unacked = not yet in ClickHouse: redelivered, never waited for
        web_enabled=True,
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        table_standby_replicas=0,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 4),
    )
