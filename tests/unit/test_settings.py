"""Settings are validated as a whole at start-up, with every problem named at once."""

import pytest
from pydantic import ValidationError

from tokenbrake.streams.settings import MIN_SECRET_CHARS, Settings, unknown_variables


def test_problems_are_reported_together():
    with pytest.raises(ValidationError) as err:
        Settings(dedupe_horizon="2d", sink_flush_rows=10, sink_max_buffer_rows=5, topic_dlq="usage",
                 topic_usage="usage")
    text = str(err.value)
    assert "at most 24h" in text
    assert "sink_flush_rows must not exceed sink_max_buffer_rows" in text
    assert "must be distinct" in text


def test_field_errors_and_cross_field_problems_come_in_one_report(monkeypatch, tmp_path):
    # five bad variables (and two topics alike): every one is named on the first run
    for name, value in {"TOPIC_PARTITIONS": "0", "DEDUPE_HORIZON": "48h", "POLICIES_PATH": str(tmp_path / "nope"),
                        "CLICKHOUSE_DSN": "localhost:8123", "CONTROL_SIGNING_KEYS": "nocolon",
                        "LOG_LEVEL": "loud", "TOPIC_DLQ": "tokenbrake.usage"}.items():
        monkeypatch.setenv(f"TOKENBRAKE_{name}", value)
    with pytest.raises(ValidationError) as err:
        Settings()
    fields = {e["loc"][0] if e["loc"] else "(whole)" for e in err.value.errors()}
    assert fields == {"topic_partitions", "dedupe_horizon", "policies_path", "clickhouse_dsn",
                      "control_signing_keys", "log_level", "(whole)"}


@pytest.mark.parametrize("keys, problem", [
    ("nocolon-but-long-enough-secret", "key_id:secret"),
    ("k1:short", f"at least {MIN_SECRET_CHARS} characters"),
    ("k1:a-long-enough-secret,k2:short", "key 'k2'"),
    (":no-key-id-but-a-long-secret", "key_id:secret"),
])
def test_signing_keys_need_a_key_id_and_a_long_secret(keys, problem):
    with pytest.raises(ValidationError, match=problem):
        Settings(control_signing_keys=keys)


def test_a_good_keyring_is_accepted():
    assert Settings(control_signing_keys="k2:a-long-enough-secret,k1:another-long-secret").signing_key[0] == "k2"


def test_a_misspelled_variable_is_named_with_the_closest_setting():
    warnings = unknown_variables({"TOKENBRAKE_POLICY_PATH": "p.yaml", "TOKENBRAKE_ZZZ": "1",
                                  "TOKENBRAKE_HOME": "/x", "TOKENBRAKE_DEMO_TRACE": "t.csv", "PATH": "/bin"})
    assert warnings == [
        "warning: TOKENBRAKE_POLICY_PATH is not a tokenbrake setting, ignored; did you mean TOKENBRAKE_POLICIES_PATH?",
        "warning: TOKENBRAKE_ZZZ is not a tokenbrake setting, ignored"]


def test_defaults_are_valid_and_a_day_of_dedupe_is_allowed():
    assert Settings(dedupe_horizon="24h").dedupe_horizon_minutes == 24 * 60
