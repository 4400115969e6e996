"""HMAC-SHA256 signatures on control events (and seals on state the worker reads back).

The worker (and ``tokenbrake control``) sign with one key id; a KillSwitch verifies
against a keyring ``{key_id: secret}``. Rotation: add the new key to every keyring,
switch the signer's ``key_id``, then remove the old key once no unexpired control
signed with it remains on the topic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from tokenbrake.schemas.codec import dumps_canonical
from tokenbrake.schemas.control import ControlEvent

#: The development keyring (``key_id:secret``): used only when none is configured, and public,
#: so the worker warns at start-up and keeps no sealed state with it.
DEV_SIGNING_KEY = "default:tokenbrake-dev-key-change-me"


def _payload(event: ControlEvent) -> bytes:
    """The signed bytes: every field but the signature. ``seq`` is left out only when it is
    unset, so records signed before it existed still verify, and removing (or adding) the
    sequence of a signed record breaks its signature."""
    data = event.model_dump(mode="json", exclude={"signature"})
    if data.get("seq") is None:
        data.pop("seq", None)
    return dumps_canonical(data)


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


@dataclass(frozen=True)
class Sealer:
    """HMAC-sealed bytes for state the worker must trust when it reads it back (detector
    baselines are pickles: unpickling unauthenticated bytes would run whatever they say).
    Seals with ``key_id``; opens with any key of ``keyring`` (the control keys, rotated alike).

    >>> sealer = Sealer("k1", b"secret", {"k1": b"secret"})
    >>> sealed = sealer.seal(b"state")
    >>> sealer.open(sealed), sealer.open([sealed[0], "0" * 64, sealed[2]])
    (b'state', None)
    """

    key_id: str
    secret: bytes
    keyring: dict[str, bytes]

    def seal(self, data: bytes) -> list[str]:
        mac = hmac.new(self.secret, data, hashlib.sha256).hexdigest()
        return [self.key_id, mac, base64.b64encode(data).decode()]

    def open(self, sealed: object) -> bytes | None:
        """The bytes, or None when the seal is malformed, unknown or does not match."""
        if not isinstance(sealed, list) or len(sealed) != 3 or sealed[0] not in self.keyring:
            return None
        try:
            data = base64.b64decode(sealed[2], validate=True)
        except (binascii.Error, TypeError, ValueError):
            return None
        expected = hmac.new(self.keyring[sealed[0]], data, hashlib.sha256).hexdigest()
        return data if isinstance(sealed[1], str) and hmac.compare_digest(expected, sealed[1]) else None
