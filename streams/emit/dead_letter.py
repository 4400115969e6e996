"""Dead-letter records: the original bytes, with why they were refused and where they came from.

Headers: ``tokenbrake-reason`` (short, machine-readable: not_json, invalid_event, too_large,
late, future, internal_error, unstorable, ...), ``tokenbrake-error`` (the detail, at most
4,000 bytes) and ``tokenbrake-source`` (``topic/partition/offset``) when there is a source
message. A payload over :data:`DLQ_MAX_BYTES` (Kafka's default record limit is 1 MB: a
larger one would be refused, and lost) goes as its first :data:`DLQ_MAX_BYTES` bytes with
``tokenbrake-truncated``, ``tokenbrake-original-bytes`` and ``tokenbrake-original-sha256``.

>>> value, headers = dead_letter_record("too_large", "16 MB", b"x" * (DLQ_MAX_BYTES + 1), "usage/0/7")
>>> len(value) == DLQ_MAX_BYTES, dict(headers)["tokenbrake-original-bytes"]
(True, b'524289')
"""

from __future__ import annotations

import hashlib

#: largest dead-letter payload sent whole
DLQ_MAX_BYTES = 512 * 1024


def dead_letter_record(reason: str, error: str, payload: bytes,
                       source: str | None = None) -> tuple[bytes, list[tuple[str, bytes]]]:
    """(value, headers) of the dead-letter record for ``payload``."""
    headers = [("tokenbrake-reason", reason.encode()), ("tokenbrake-error", error.encode()[:4000])]
    if source is not None:
        headers.append(("tokenbrake-source", source.encode()))
    if len(payload) > DLQ_MAX_BYTES:
        headers += [("tokenbrake-truncated", b"true"), ("tokenbrake-original-bytes", str(len(payload)).encode()),
                    ("tokenbrake-original-sha256", hashlib.sha256(payload).hexdigest().encode())]
        payload = payload[:DLQ_MAX_BYTES]
    return payload, headers
