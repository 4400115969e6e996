"""Settings are validated as a whole at start-up, with every problem named at once."""

import pytest
from pydantic import ValidationError

from streams.settings import Settings


def test_problems_are_reported_together():
    with pytest.raises(ValidationError) as err:
        Settings(dedupe_horizon="2d", sink_flush_rows=10, sink_max_buffer_rows=5, topic_dlq="usage",
                 topic_usage="usage")
    text = str(err.value)
    assert "dedupe_horizon: at most 24h" in text
    assert "sink_flush_rows must not exceed sink_max_buffer_rows" in text
    assert "the topics must be distinct" in text


def test_defaults_are_valid_and_a_day_of_dedupe_is_allowed():
    assert Settings(dedupe_horizon="24h").dedupe_horizon_minutes == 24 * 60
