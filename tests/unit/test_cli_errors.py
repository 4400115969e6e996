"""Every CLI mistake gets one line naming the problem and the fix, and a non-zero exit."""

import os
import socket
from pathlib import Path

import pytest

from tokenbrake.streams import cli
from tokenbrake.streams.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n"
BURSTGPT = "Timestamp,Model,Request tokens,Response tokens\n5,ChatGPT,472,18\n"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in [n for n in os.environ if n.startswith("TOKENBRAKE_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def nowhere() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def main(argv: list[str]) -> int:
    """cli.main as the console script runs it: a SystemExit is the exit code."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.fixture
def traces(tmp_path):
    (tmp_path / "azure.csv").write_text(AZURE)
    (tmp_path / "burst.csv").write_text(BURSTGPT)
    return tmp_path


def test_replay_with_the_wrong_format_names_the_right_one(traces, capsys, nowhere):
    assert main(["replay", str(traces / "azure.csv"), "--format", "burstgpt", "--bootstrap", nowhere]) == 2
    assert "not --format burstgpt (no column Timestamp, Model" in one_line(capsys)
    assert main(["replay", str(traces / "burst.csv"), "--format", "azure", "--bootstrap", nowhere]) == 2
    assert "it looks like --format burstgpt" in one_line(capsys)


def test_replay_of_a_csv_without_format(traces, capsys, nowhere):
    assert main(["replay", str(traces / "azure.csv"), "--bootstrap", nowhere]) == 2
    assert "line 1 is not JSON (--format jsonl); it looks like a CSV trace: add --format azure" in one_line(capsys)


def test_replay_and_control_list_without_a_broker(traces, capsys, nowhere):
    assert main(["replay", str(traces / "azure.csv"), "--format", "azure", "--bootstrap", nowhere]) == 1
    assert one_line(capsys).startswith(f"replay: no Kafka broker answered at {nowhere} (Connection refused)")
    assert main(["control", "list", "--bootstrap", nowhere]) == 1
    assert f"control: no Kafka broker answered at {nowhere}" in one_line(capsys)


def test_run_without_its_broker(monkeypatch, capsys, nowhere):
    monkeypatch.setenv("TOKENBRAKE_KAFKA_BOOTSTRAP", nowhere)
    monkeypatch.setenv("TOKENBRAKE_WEB_PORT", str(free_port()))
    assert main(["run"]) == 1
    assert f"run: no Kafka broker answered at {nowhere}" in one_line(capsys)


def test_run_with_its_web_port_taken(monkeypatch, capsys, nowhere):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("TOKENBRAKE_WEB_PORT", str(port))
        monkeypatch.setenv("TOKENBRAKE_KAFKA_BOOTSTRAP", nowhere)
        assert main(["run"]) == 1
    err = one_line(capsys)
    assert f"web port 127.0.0.1:{port} is not free" in err and "TOKENBRAKE_WEB_PORT" in err


def test_backtest_of_a_missing_file(tmp_path, capsys):
    assert main(["backtest", "--input", str(tmp_path / "nope.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "backtest: no such input file" in one_line(capsys)


def test_backtest_of_a_trace_needs_its_format_and_fails_when_nothing_is_valid(traces, tmp_path, capsys):
    out = tmp_path / "decisions.jsonl"
    assert main(["backtest", "--input", str(traces / "azure.csv"), "--output", str(out)]) == 2
    assert "add --format azure" in one_line(capsys)
    (tmp_path / "bad.jsonl").write_text('{"event_id": "x"}\n{"event_id": "y"}\n')
    assert main(["backtest", "--input", str(tmp_path / "bad.jsonl"), "--output", str(out)]) == 1
    assert capsys.readouterr().err.splitlines()[-1].startswith("backtest: no valid event in")
    assert main(["backtest", "--input", str(traces / "azure.csv"), "--format", "azure", "--output", str(out)]) == 0
    assert capsys.readouterr().out.startswith("1 events (0 invalid)")


def test_replay_of_a_jsonl_file_with_a_bad_line_further_down(tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    path.write_text('{"event_id": "a"}\n{"event_id": "b"}\nnot json\n')
    with socket.socket() as listening:  # something answers at the bootstrap, so the file is read
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        bootstrap = f"127.0.0.1:{listening.getsockname()[1]}"
        assert main(["replay", str(path), "--bootstrap", bootstrap]) == 2
    assert f"replay: {path}: line 3 is not JSON" in one_line(capsys)
