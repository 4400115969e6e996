"""HMAC-SHA256 signatures on control events.

The worker (and ``tokenbrake control``) sign with one key id; a KillSwitch verifies
against a keyring ``{key_id: secret}``. Rotation: add the new key to every keyring,
switch the signer's ``key_id``, then remove the old key once no unexpired control
signed with it remains on the topic.
"""

from __future__ import annotations

import hashlib
import hmac

from schemas.codec import dumps_canonical
from schemas.control import ControlEvent


def _payload(event: ControlEvent) -> bytes:
    return dumps_canonical(event.model_dump(mode="json", exclude={"signature"}))


def sign(event: ControlEvent, key_id: str, secret: bytes) -> ControlEvent:
    """Return a copy of ``event`` carrying ``key_id`` and its signature."""
    unsigned = event.model_copy(update={"key_id": key_id, "signature": None})
    digest = hmac.new(secret, _payload(unsigned), hashlib.sha256).hexdigest()
    return unsigned.model_copy(update={"signature": digest})


def verify(event: ControlEvent, keyring: dict[str, bytes]) -> bool:
    """True when the event is signed by a key in ``keyring`` and unaltered."""
    if not event.signature or not event.key_id or event.key_id not in keyring:
        return False
    expected = hmac.new(keyring[event.key_id], _payload(event), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, event.signature)


def parse_keyring(spec: str) -> dict[str, bytes]:
    """``"k1:secret1,k2:secret2"`` -> keyring. A bare secret gets key id ``default``."""
    ring: dict[str, bytes] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key_id, sep, secret = part.partition(":")
        if not sep:
            key_id, secret = "default", part
        ring[key_id] = secret.encode()
    return ring
