"""The worker's jobs that stand apart from the deciding loop (see streams.worker): publishing
signed controls and alerts, dead-lettering, Kafka partitioning of tenants (``routing``) and
forwarding misrouted events, the broker watchdog, and the status views."""
