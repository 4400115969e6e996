"""TLS/SASL settings -> the keyword arguments every Kafka client gets. SASL itself cannot be
exercised against the embedded broker (it has none): these check what aiokafka is given, for
the clients, the CLI and the worker's Faust app alike. TLS is tested for real in
tests/integration/test_tls.py."""

import logging
from urllib.parse import urlsplit

import pytest
from aiokafka.abc import AbstractTokenProvider
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

from tokenbrake.clients import KafkaSecurity, KillSwitch, UsageReporter
from tokenbrake.streams.app import build_app, faust_credentials
from tokenbrake.streams.settings import Settings

SCRAM = {"kafka_bootstrap": "broker.example:9096", "kafka_security_protocol": "SASL_SSL",
         "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "svc-tokenbrake",
         "kafka_sasl_password": "s3cret-pw"}


class StaticToken(AbstractTokenProvider):
    async def token(self) -> str:
        return "a-token"


TOKEN_PROVIDER = StaticToken()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_with_a_password_gives_every_client_the_same_kwargs(protocol, mechanism):
    settings = Settings(**{**SCRAM, "kafka_security_protocol": protocol, "kafka_sasl_mechanism": mechanism})
    kwargs = settings.kafka_kwargs()
    assert kwargs["security_protocol"] == protocol and kwargs["sasl_mechanism"] == mechanism
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("svc-tokenbrake", "s3cret-pw")
    assert ("ssl_context" in kwargs) == (protocol == "SASL_SSL")
    # the worker's Faust app: its driver turns the credentials back into the same aiokafka kwargs
    faust_kwargs = credentials_to_aiokafka_auth(faust_credentials(settings.kafka_security()))
    assert {k: v for k, v in faust_kwargs.items() if k != "ssl_context"} == \
        {k: v for k, v in kwargs.items() if k != "ssl_context"}
    assert (faust_kwargs["ssl_context"] is not None) == (protocol == "SASL_SSL")
    # the clients the worker and the CLI build
    assert settings.control_view_kwargs()["security"] == settings.kafka_security()
    reporter = UsageReporter("b:1", user_id_salt="s", security=settings.kafka_security())
    assert reporter._connection["sasl_plain_password"] == "s3cret-pw"


def test_oauthbearer_takes_a_token_provider_by_import_path():
    settings = Settings(kafka_bootstrap="b:9093", kafka_security_protocol="SASL_SSL",
                        kafka_sasl_mechanism="OAUTHBEARER",
                        kafka_sasl_oauth_token_provider="tests.unit.test_security:TOKEN_PROVIDER")
    kwargs = settings.kafka_kwargs()
    assert kwargs["sasl_mechanism"] == "OAUTHBEARER" and kwargs["sasl_oauth_token_provider"] is TOKEN_PROVIDER
    faust_kwargs = credentials_to_aiokafka_auth(faust_credentials(settings.kafka_security()))
    assert faust_kwargs["sasl_oauth_token_provider"] is TOKEN_PROVIDER
    assert faust_kwargs["security_protocol"] == "SASL_SSL"


def test_tls_only_and_plaintext():
    assert Settings().kafka_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(KafkaSecurity()) is None
    ssl_only = Settings(kafka_bootstrap="b:9093", kafka_security_protocol="SSL").kafka_kwargs()
    assert ssl_only["security_protocol"] == "SSL" and ssl_only["ssl_context"].check_hostname


def test_the_faust_app_gets_the_credentials():
    app = build_app(Settings(**SCRAM), "broker.example:9096")
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512" and auth["security_protocol"] == "SASL_SSL"


def test_inconsistent_security_settings_are_all_reported(tmp_path):
    with pytest.raises(ValidationError) as err:
        Settings(kafka_bootstrap="b:1", kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-256",
                 kafka_ssl_cafile=tmp_path / "missing.pem", clickhouse_username="u")
    text = str(err.value)
    assert "kafka_ssl_cafile: no such file" in text
    assert "SASL SCRAM-SHA-256 needs a username and a password" in text
    assert "clickhouse_username/password need an http:// or https:// clickhouse_dsn" in text
    with pytest.raises(ValidationError, match="needs a SASL mechanism"):
        Settings(kafka_security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="needs protocol SASL_SSL or SASL_PLAINTEXT"):
        Settings(kafka_sasl_mechanism="PLAIN", kafka_sasl_username="u", kafka_sasl_password="p")
    with pytest.raises(ValidationError, match="OAUTHBEARER needs module:attribute"):
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="OAUTHBEARER")
    with pytest.raises(ValueError, match="TLS files given"):
        KafkaSecurity("SASL_PLAINTEXT", "PLAIN", "u", "p", ssl_cafile="/ca.pem")


def test_secrets_are_never_shown(caplog):
    settings = Settings(**SCRAM, clickhouse_dsn="https://ch.example:8443", clickhouse_username="ch",
                        clickhouse_password="ch-pw", kafka_ssl_key_password=None)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("tokenbrake.test").info("settings %s %r", settings, settings)
    for text in (repr(settings), str(settings), caplog.text, repr(settings.kafka_security()),
                 repr(KillSwitch("b:1", security=settings.kafka_security()).security)):
        assert "s3cret-pw" not in text and "ch-pw" not in text


def test_clickhouse_over_https_with_credentials():
    settings = Settings(clickhouse_dsn="https://ch.example:8443", clickhouse_username="svc",
                        clickhouse_password="p@ss:w/rd")
    dsn = urlsplit(settings.resolved_clickhouse_dsn)
    assert (dsn.scheme, dsn.hostname, dsn.port) == ("https", "ch.example", 8443)
    assert dsn.username == "svc" and dsn.password == "p%40ss%3Aw%2Frd"  # quoted: clickhouse-connect unquotes
    assert Settings().resolved_clickhouse_dsn.startswith("chdb://")
