"""``tokenbrake backtest --rss-at`` and ``tokenbrake evaluate`` on small inputs (the big
measurements are commands quoted in the README)."""

from tests.helpers import event
from tokenbrake.schemas.codec import dumps
from tokenbrake.streams.cli import main
from tokenbrake.streams.tools.scenarios import generate


def test_backtest_streams_a_file_and_prints_rss_at_the_marks(tmp_path, capsys):
    src = tmp_path / "events.jsonl"
    src.write_bytes(b"".join(dumps(event().model_dump(mode="json")) + b"\n" for _ in range(5)) + b"oops\n")
    assert main(["backtest", "--input", str(src), "--output", str(tmp_path / "d.jsonl"), "--rss-at", "2,4"]) == 0
    out, err = capsys.readouterr()
    assert [line.split()[0] for line in err.splitlines() if line.startswith("events=")] == ["events=", "events="]
    assert "skipped invalid event" in err and out.startswith("5 events (1 invalid)")


def test_cli_mistakes_get_one_line(tmp_path, capsys):
    assert main(["backtest", "--input", str(tmp_path / "none.jsonl"), "--output", str(tmp_path / "d")]) == 2
    assert main(["evaluate"]) == 2
    assert main(["evaluate", "--scenarios", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 3 and "Traceback" not in err


def _tokens():
    return [(400 + 37 * i % 3000, 50 + 11 * i % 400) for i in range(500)]


def test_production_volume_has_busy_scopes_failures_retries_and_cached_input():
    events, plan = generate(1, 1, _tokens(), incidents=False, volume="production")
    minute_of_peak = [e for e in events if 14 * 60 <= (e["ts"] // 60_000) % 1440 < 14 * 60 + 10]
    chat = [e for e in minute_of_peak if (e["tenant_id"], e["feature_id"]) == ("acme", "chat")]
    assert plan == [] and 100 <= len(chat) / 10 <= 250  # calls a minute on the busiest scope at the peak
    assert any(e["attempt"] == 1 for e in chat) and any(e["status"] == "error" for e in chat)
    cached = sum(e["cached_input_tokens"] for e in chat) / sum(e["input_tokens"] for e in chat)
    assert 0.2 <= cached <= 0.4


def test_evaluate_tallies_recall_delay_and_clean_alerts_per_rule():
    from dataclasses import asdict

    from tokenbrake.schemas.usage import UsageEvent
    from tokenbrake.streams.tools.evaluate import Tally

    tally = Tally()
    events, plan = generate(2, 6, _tokens(), volume="standard")
    tally.add("standard-incidents-seed2", (UsageEvent.model_validate(e) for e in events), [asdict(i) for i in plan])
    rules = tally.report()["rules"]
    assert set(rules) >= {"retry_storm", "cost_rate", "token_inflation", "cache_regression"}
    assert rules["request_cost_cap"]["recall"] == 1.0 and rules["request_cost_cap"]["worst_delay_min"] == 0.0
    assert rules["cost_rate"]["detected"] == 2  # the runaway loop and the model switch
    assert rules["retry_storm"]["false_alerts_per_clean_day"] is None  # no clean file: not a zero
