"""How the clients reach a broker that wants TLS and/or SASL (Confluent Cloud, MSK, Aiven,
Event Hubs: all SASL_SSL). A plain dataclass so that services need neither Faust nor the
worker's settings: ``streams.settings.Settings.kafka_security()`` builds one from
``TOKENBRAKE_KAFKA_*``, and every aiokafka client (reporter, kill switch, the worker's own,
the CLI's) takes it as ``security=``.

Mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (username and password), OAUTHBEARER (an
``aiokafka.abc.AbstractTokenProvider``: aiokafka asks it for a token at each login). TLS
verifies the broker's certificate and host name against ``ssl_cafile`` (or the system's
CAs); ``ssl_certfile``/``ssl_keyfile`` add a client certificate (mutual TLS). Secrets never
appear in ``repr()``.

>>> KafkaSecurity().kwargs()
{'security_protocol': 'PLAINTEXT'}
>>> s = KafkaSecurity("SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", username="svc", password="hunter2")
>>> sorted(s.kwargs().items())  # doctest: +NORMALIZE_WHITESPACE
[('sasl_mechanism', 'SCRAM-SHA-512'), ('sasl_plain_password', 'hunter2'), ('sasl_plain_username', 'svc'),
 ('security_protocol', 'SASL_PLAINTEXT')]
>>> "hunter2" in repr(s)
False
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
PROTOCOLS: tuple[str, ...] = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


@dataclass(frozen=True)
class KafkaSecurity:
    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: Mechanism | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    oauth_token_provider: Any = field(default=None, repr=False)  # aiokafka.abc.AbstractTokenProvider
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))

    def problems(self) -> list[str]:
        """Every inconsistency at once (empty when usable)."""
        out = []
        if self.protocol not in PROTOCOLS:
            out.append(f"security protocol must be one of {', '.join(PROTOCOLS)}")
        sasl = self.protocol.startswith("SASL_")
        if sasl and self.sasl_mechanism not in MECHANISMS:
            out.append(f"{self.protocol} needs a SASL mechanism: one of {', '.join(MECHANISMS)}")
        if not sasl and self.sasl_mechanism is not None:
            out.append(f"a SASL mechanism needs protocol SASL_SSL or SASL_PLAINTEXT, not {self.protocol}")
        if sasl and self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and not (
                self.username and self.password):
            out.append(f"SASL {self.sasl_mechanism} needs a username and a password")
        if sasl and self.sasl_mechanism == "OAUTHBEARER" and self.oauth_token_provider is None:
            out.append("SASL OAUTHBEARER needs a token provider")
        if (self.ssl_certfile or self.ssl_keyfile or self.ssl_cafile) and not self.uses_tls:
            out.append(f"TLS files given but protocol {self.protocol} does not use TLS")
        if bool(self.ssl_keyfile) and not self.ssl_certfile:
            out.append("a client key needs its certificate (ssl_certfile)")
        return out

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verifies the broker's certificate chain and host name; None without TLS."""
        if not self.uses_tls:
            return None
        return create_ssl_context(cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile,
                                  password=self.ssl_key_password)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            out["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism == "OAUTHBEARER":
            out.update(sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=self.oauth_token_provider)
        elif self.sasl_mechanism is not None:
            out.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.username,
                       sasl_plain_password=self.password)
        return out


def connection_kwargs(security: KafkaSecurity | None) -> dict[str, Any]:
    """``security.kwargs()``, or nothing for a plaintext broker."""
    return security.kwargs() if security is not None else {}
