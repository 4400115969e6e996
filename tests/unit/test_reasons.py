"""Reasons read for people: which step of which budget, in rounded dollars; the events keep
the exact amounts."""

from decimal import Decimal

from tests.helpers import NOW_MS, engine, event
from tokenbrake.clients.killswitch import _reason
from tokenbrake.streams.operator import build_control

POLICY = """
budgets:
  - id: acme-daily
    scope: {tenant: acme}
    period: day
    limit_usd: "0.035"
    warn_at: [0.8]
    on_exceed:
      - {at: 1.0, action: downgrade, to_model: gpt-4o-mini}
      - {at: 1.5, action: block}
"""


def test_a_control_names_its_budget_step_in_rounded_dollars():
    e = engine(POLICY)
    for i in range(20):
        e.process(event(ts=NOW_MS + i), 0, i)
    downgrade, block = e.drain().controls
    assert downgrade.reason.detail == ("budget acme-daily ($0.035 a day): step 1 of 2, downgrade to gpt-4o-mini "
                                       "at 1.0x ($0.035)")
    assert block.reason.detail == "budget acme-daily ($0.035 a day): step 2 of 2, block at 1.5x ($0.0525)"
    assert block.reason.threshold == Decimal("0.0525") and block.reason.observed == Decimal("0.0525")  # exact
    assert _reason(block).endswith(": $0.0525 of $0.0525 (budget acme-daily ($0.035 a day): step 2 of 2, "
                                   "block at 1.5x ($0.0525))")


def test_an_operator_control_reads_as_what_the_operator_wrote():
    control = build_control("block", "acme", None, None, None, None, None, "1h", "runaway agent")
    assert _reason(control) == "operator (1h): runaway agent"
