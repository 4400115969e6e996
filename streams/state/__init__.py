"""The core's state: the generic store every stage keeps its state in (``store``: counters,
decisions, dedupe chunks, each change marked for the changelog) and the one module that formats
and parses every key of it (``keys``)."""
