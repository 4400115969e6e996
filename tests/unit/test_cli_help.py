"""Every option of every subcommand says what it does in `--help`; `evaluate` prints JSON only
when asked."""

import argparse

import pytest

from tokenbrake.streams import cli


class Parsed(Exception):
    pass


def the_parser(monkeypatch) -> argparse.ArgumentParser:  # noqa: ANN001
    seen = []

    def capture(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(self)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(Parsed):
        cli.main(["status"])
    return seen[0]


def test_every_subcommand_option_has_a_help_line(monkeypatch):
    parser = the_parser(monkeypatch)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"{name} {'/'.join(action.option_strings) or action.dest}"
            for name, subparser in sub.choices.items() for action in subparser._actions
            if not isinstance(action, argparse._HelpAction) and not action.help
            and not (action.dest == "action" and action.choices)]  # `control ACTION`: its choices say it
    assert bare == []
    assert all(choice.help for choice in sub._choices_actions)  # and every subcommand a line of its own


def test_evaluate_prints_a_table_and_no_json_without_json(monkeypatch, capsys, tmp_path):
    import tokenbrake.streams.tools.evaluate as evaluate

    rules = {"retry_storm": {"precision": 1.0, "recall": 1.0, "detected": 1, "incidents": 1, "median_delay_min": 2,
                             "worst_delay_min": 3, "false_alerts_per_clean_day": 0.0}}
    report = {"volumes": {"standard": {"files": ["s1"], "clean_days": 1, "rules": rules, "missed": []}}}
    monkeypatch.setattr(evaluate, "evaluate", lambda path, progress: dict(report))
    monkeypatch.setattr(evaluate, "azure_clean_alerts", lambda path: [])
    assert cli.main(["evaluate", "--scenarios", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "retry" in out and "alerts on the clean replay" in out and "{" not in out
