"""Models named in the policies file are checked against the price catalog and overrides."""

from pathlib import Path

import pytest

from tokenbrake.streams import cli
from tokenbrake.streams.decide.named_models import check_policies_file

TYPO = """\
budgets:
  - id: acme-daily
    scope: {tenant: acme, tier: enterprize}
    period: day
    limit_usd: "50"
    on_exceed:
      - {at: 1.0, action: downgrade, to_model: gpt-4o-mni}
      - {at: 1.5, action: downgrade, to_model: llama-3-70b}
      - {at: 2.0, action: downgrade, to_model: our-finetune}
detectors:
  cost_rate: {to_model: gtp-4o-mini}
"""
OVERRIDES = 'prices:\n  - {provider: self-hosted, model: llama-3-70b, input_mtok: "0.20", output_mtok: "0.60"}\n'


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "p.yaml").write_text(TYPO)
    (tmp_path / "prices.yaml").write_text(OVERRIDES)
    return tmp_path / "p.yaml", tmp_path / "prices.yaml"


def test_a_typo_in_a_downgrade_target_names_file_line_and_field(files):
    policies, prices = files
    check = check_policies_file(policies, prices)
    assert check.errors[0].startswith(f"{policies}:7: budgets.0.on_exceed.0.to_model: unknown model 'gpt-4o-mni'")
    assert "did you mean 'gpt-4o-mini'?" in check.errors[0]
    assert check.errors[1].startswith(f"{policies}:9: budgets.0.on_exceed.2.to_model: unknown model 'our-finetune'")
    assert check.errors[2].startswith(f"{policies}:11: detectors.cost_rate.to_model: unknown model")
    assert len(check.errors) == 3  # llama-3-70b is priced by the overrides
    assert check.warnings == [f"{policies}:3: budgets.0.scope.tier: tier 'enterprize' is not one of "
                              "['business', 'enterprise', 'free', 'pro', 'team']; did you mean 'enterprise'? "
                              "(declare your tiers under tiers: to silence this)"]


def test_private_models_and_declared_tiers_are_the_opt_out(files):
    policies, prices = files
    policies.write_text(TYPO.replace("gpt-4o-mni", "gpt-4o-mini").replace("gtp-", "gpt-")
                        + "private_models: [our-finetune]\ntiers: [enterprize]\n")
    check = check_policies_file(policies, prices)
    assert check.errors == [] and check.warnings == []


def test_the_worker_and_the_backtest_refuse_to_start(files, monkeypatch, capsys, tmp_path):
    policies, prices = files
    monkeypatch.setenv("TOKENBRAKE_POLICIES_PATH", str(policies))
    monkeypatch.setenv("TOKENBRAKE_PRICE_OVERRIDES_PATH", str(prices))
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "x"}\n')
    assert cli.main(["backtest", "--input", str(events), "--output", str(tmp_path / "out.jsonl")]) == 2
    assert cli.main(["run"]) == 2  # before any broker is started
    err = capsys.readouterr().err
    assert err.count("unknown model 'gpt-4o-mni'") == 2
