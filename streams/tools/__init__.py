"""The command line's tools, apart from the pipeline: nothing in the core or the runtime imports them.

- ``replay``: read a trace (JSONL, Azure, BurstGPT) into usage events stamped in the present.
- ``publish``: produce events to the usage topic at a pace.
- ``scenarios``: labelled detector scenarios (seeded, two volumes).
- ``evaluate``: precision, recall and delay per rule over scenarios, through the offline engine.
- ``demo``: the whole loop on the embedded stack (``make demo``); ``demo_policies.yaml`` is its policy file.
- ``bench``: throughput, latency and memory of the worker on the embedded broker.
"""
