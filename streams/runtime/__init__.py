"""The worker's jobs that stand apart from the deciding loop (see streams.worker): publishing
signed controls and alerts, dead-lettering, and the status views."""
