"""Every state key format parses back to what it was made of (streams/state/keys.py), and the
strings themselves are the ones persisted on the brokers by earlier releases."""

import re

from hypothesis import given
from hypothesis import strategies as st

from tokenbrake.streams.state import keys

# what the contract allows in a tenant, feature, user or model id (schemas.usage.ScopeId)
ids = st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="|"), min_size=1, max_size=40)
policy_ids = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)  # policies.py: budget and cap ids
labels = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)  # a provider
numbers = st.integers(min_value=0, max_value=10**9)
scopes = st.one_of(
    ids.map(lambda t: (keys.scope_tenant(t), (t, "tenant", ""))),
    st.tuples(ids, ids).map(lambda tf: (keys.scope_feature(*tf), (tf[0], "feature", tf[1]))),
    st.tuples(ids, ids).map(lambda tu: (keys.scope_user(*tu), (tu[0], "user", tu[1]))),
    st.tuples(ids, ids).map(lambda tm: (keys.scope_model(*tm), (tm[0], "model", tm[1]))),
)


@given(scopes)
def test_aggregate_scopes_round_trip(scope_and_parts):
    scope, parts = scope_and_parts
    assert keys.parse_scope(scope) == parts
    assert keys.is_user_scope(scope) == (parts[1] == "user")


@given(scopes, numbers, st.sampled_from([keys.day_key, keys.month_key, keys.minute_key]))
def test_bucket_keys_round_trip(scope_and_parts, number, make):
    key = make(number, scope_and_parts[0])
    kind = keys.parse_bucket_key(key)[0]
    assert keys.parse_bucket_key(key) == (kind, number, scope_and_parts[0])
    assert keys.bucket_kind(key) == kind and keys.bucket_number(key) == number
    assert kind == {keys.day_key: keys.DAY, keys.month_key: keys.MONTH, keys.minute_key: keys.MINUTE}[make]


@given(st.lists(scopes.map(lambda s: s[0]), min_size=1, max_size=4), numbers, numbers,
       st.one_of(st.none(), numbers))
def test_bucket_keys_of_several_scopes_are_each_scopes_keys(scope_list, day, month, minute):
    made = keys.bucket_keys(scope_list, day, month, minute)
    expected = [keys.day_key(day, s) for s in scope_list] + [keys.month_key(month, s) for s in scope_list]
    expected += [] if minute is None else [keys.minute_key(minute, s) for s in scope_list]
    assert made == expected


@given(policy_ids, scopes)
def test_budget_keys_round_trip(policy_id, scope_and_parts):
    key = keys.budget_key(policy_id, scope_and_parts[0])
    assert key.startswith(keys.BUDGET) and keys.parse_budget_key(key) == (policy_id, scope_and_parts[0])


@given(policy_ids, ids, ids, ids, numbers)
def test_cap_keys_round_trip(cap_id, tenant, feature, model, day):
    key = keys.cap_key(cap_id, tenant, feature, model, day)
    assert key.startswith(keys.CAP) and keys.parse_cap_key(key) == (cap_id, tenant, feature, model, day)


@given(labels, ids)
def test_unpriced_keys_round_trip(provider, model):
    key = keys.unpriced_key(provider, model)
    assert key.startswith(keys.UNPRICED) and keys.parse_unpriced_key(key) == (provider, model)


@given(st.sampled_from(["retry_storm", "cost_rate", "spend_spike"]), st.lists(ids, min_size=1, max_size=3))
def test_baseline_keys_round_trip(rule, scope):
    key = keys.baseline_key(rule, tuple(scope))
    assert key.startswith(keys.BASELINE) and keys.parse_baseline_key(key) == (rule, tuple(scope))


@given(ids)
def test_operator_keys_round_trip(control_scope_key):
    key = keys.operator_key(control_scope_key)
    assert key.startswith(keys.OPERATOR) and keys.parse_operator_key(key) == control_scope_key


@given(st.integers(min_value=0, max_value=2**20 - 1), st.integers(min_value=-1, max_value=2**62), labels)
def test_chunk_keys_round_trip(partition, position, first_id):
    key = keys.chunk_key(partition, position, first_id)
    assert keys.parse_chunk_key(key) == (partition, position if position >= 0 else first_id)


def test_the_persisted_strings_are_unchanged():
    """Records on the brokers were written with these exact keys: they must still be read."""
    assert keys.day_key(20416, keys.scope_user("acme", "u1")) == "d20416|t=acme|u=u1"
    assert keys.month_key(670, keys.scope_tenant("acme")) == "M670|t=acme"
    assert keys.minute_key(29400000, keys.scope_feature("acme", "chat")) == "m29400000|t=acme|f=chat"
    assert keys.minute_key(1, keys.scope_model("acme", "gpt-4o")) == "m1|t=acme|m=gpt-4o"
    assert keys.budget_key("daily", "t=acme|f=chat") == "b|daily|t=acme|f=chat"
    assert keys.cap_key("cap", "acme", "chat", "gpt-4o", 20416) == "c|cap|acme|chat|gpt-4o|20416"
    assert keys.unpriced_key("openai", "gpt-9") == "u|openai|gpt-9"
    assert keys.baseline_key("cost_rate", ("acme", "chat")) == "det|cost_rate|acme|chat"
    assert keys.operator_key("tenant=acme/feature=*/user=*/model=*") == "op|tenant=acme/feature=*/user=*/model=*"


def _chunks(pos_of):
    from tokenbrake.streams.ingest.dedupe import Deduper
    from tokenbrake.streams.state.store import Store

    store = Store("dedupe")
    dedupe = Deduper(store, horizon_minutes=60, max_entries=1000)
    for i in range(5):
        dedupe.check(f"e{i}", 60_000 * i, partition=i % 2, pos=pos_of(i))
    dedupe.seal()
    return sorted(store.data)


def test_dedupe_chunk_keys_are_made_of_what_the_chunk_holds():
    """The same events read at the same places make the same chunk keys in any process (no random
    prefix): a chunk written again after a crash replaces itself."""
    assert _chunks(lambda i: i << 20) == _chunks(lambda i: i << 20) == [f"chunk:0:{0}", f"chunk:1:{1 << 20}"]
    assert _chunks(lambda i: -1) == ["chunk:0:id=e0", "chunk:1:id=e1"]  # a backtest: no positions


@given(policy_ids, ids, ids, ids, st.sampled_from(["d20500", "M674"]))
def test_unit_cost_outcome_and_session_keys_round_trip(policy_id, tenant, feature, other, tag):
    assert keys.parse_unit_cost_key(keys.unit_cost_key(policy_id, tenant, feature)) == (policy_id, tenant, feature)
    assert keys.parse_outcome_key(keys.outcome_key(tenant, other)) == (tenant, other)
    assert keys.parse_session_key(keys.session_key(tag, tenant, feature, other)) == (tag, tenant, feature, other)
    assert keys.unit_cost_key("p", "t", "f") == "uc|p|t|f" and keys.outcome_key("t", "o") == "uo|t|o"  # persisted


@given(scopes, numbers, st.sampled_from([keys.day_key, keys.minute_key]))
def test_the_rollup_key_pattern_reads_day_and_minute_keys_as_the_parsers_do(scope_and_parts, number, make):
    key = make(number, scope_and_parts[0])
    found = re.match(keys.ROLLUP_KEY_PATTERN, key)
    tenant, dimension, value = keys.parse_scope(scope_and_parts[0])
    letter = {"tenant": None, "feature": "f", "user": "u", "model": "m"}[dimension]
    assert found is not None
    assert (found["kind"], int(found["number"]), found["tenant"], found["letter"], found["value"] or "") == \
        (keys.parse_bucket_key(key)[0], number, tenant, letter, value)
    assert re.match(keys.ROLLUP_KEY_PATTERN, keys.month_key(number, scope_and_parts[0])) is None  # no rollup row
