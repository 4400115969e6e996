"""Every key of the core's state stores, formatted and parsed in one place.

The keys are persisted (they are the changelog records' keys on the brokers), so these
strings are a format: a worker must read back what an earlier one wrote. Ids never hold
``|`` (``schemas.usage.ScopeId``; policy and cap ids are ``[A-Za-z0-9_.:-]``); a provider
may, so it comes first where it appears and is parsed from the right.

Aggregates store (spend counters per scope and event-time bucket)::

    d{day}|{scope}          UTC day (days since the epoch)
    M{month}|{scope}        calendar month (months since 1970-01)
    m{minute}|{scope}       minute (minutes since the epoch)

    scope: t={tenant}  |  t={tenant}|f={feature}  |  t={tenant}|u={user}  |  t={tenant}|m={model}

Decisions store::

    b|{policy}|{scope}                          a budget policy's level on an aggregate scope
    c|{cap}|{tenant}|{feature}|{model}|{day}    a request cost cap's alert of one day
    u|{provider}|{model}                        an unpriced model, reported once
    det|{rule}|{tenant}[|{feature}[|{model}]]   a detector's model and open incident
    op|{control scope key}                      an operator's control (``schemas.control.scope_key``)
    um|{partition}                              the month whose per-user totals began mid-way

Dedupe store (one chunk of remembered event ids per record)::

    chunk:{partition}:{position}       position (``offset << 20 | element``) of the chunk's first id
    chunk:{partition}:id={event_id}    when the events have no position (a backtest)

(Chunks written by earlier releases have keys ``{8 hex}:{partition}:{n}``; they are read by
their values alone.)

>>> parse_bucket_key(day_key(20416, scope_user("acme", "u1")))
('d', 20416, 't=acme|u=u1')
>>> parse_scope("t=acme|m=gpt-4o")
('acme', 'model', 'gpt-4o')
"""

from __future__ import annotations

# -- aggregate scopes --------------------------------------------------------------------------
#: the letter of a scope's second part -> the dimension it names
DIMENSIONS = {"f": "feature", "u": "user", "m": "model"}


def scope_tenant(tenant: str) -> str:
    return f"t={tenant}"


def scope_feature(tenant: str, feature: str) -> str:
    return f"t={tenant}|f={feature}"


def scope_user(tenant: str, user: str) -> str:
    return f"t={tenant}|u={user}"


def scope_model(tenant: str, model: str) -> str:
    return f"t={tenant}|m={model}"


def parse_scope(scope: str) -> tuple[str, str, str]:
    """(tenant, dimension, value) of an aggregate scope; dimension ``tenant`` has value ``""``."""
    tenant, _, rest = scope[2:].partition("|")
    if not rest:
        return tenant, "tenant", ""
    return tenant, DIMENSIONS[rest[0]], rest[2:]


def is_user_scope(key: str) -> bool:
    """Whether a scope, or a bucket key, is a user's."""
    return "|u=" in key


# -- aggregate buckets -------------------------------------------------------------------------
DAY, MONTH, MINUTE = "d", "M", "m"


def day_key(day: int, scope: str) -> str:
    return f"d{day}|{scope}"


def month_key(month: int, scope: str) -> str:
    return f"M{month}|{scope}"


def minute_key(minute: int, scope: str) -> str:
    return f"m{minute}|{scope}"


def bucket_keys(scopes: tuple[str, ...] | list[str], day: int, month: int, minute: int | None) -> list[str]:
    """The day and month keys of every scope, then its minute key unless ``minute`` is None."""
    keys = [f"d{day}|{s}" for s in scopes] + [f"M{month}|{s}" for s in scopes]
    if minute is not None:
        keys += [f"m{minute}|{s}" for s in scopes]
    return keys


def bucket_kind(key: str) -> str:
    """``d``, ``M`` or ``m``: which bucket a key counts (:data:`DAY`, :data:`MONTH`, :data:`MINUTE`)."""
    return key[0]


def bucket_number(key: str) -> int:
    """The day, month or minute a bucket key counts."""
    return int(key[1:key.index("|")])


def parse_bucket_key(key: str) -> tuple[str, int, str]:
    """(kind, day/month/minute, scope) of a bucket key."""
    bucket, _, scope = key.partition("|")
    return bucket[0], int(bucket[1:]), scope


#: :func:`parse_bucket_key` and :func:`parse_scope` of a day or minute bucket key as one regular
#: expression (RE2 and ``re`` alike), for parsing many keys at once outside Python (the writer's
#: Arrow rollups): kind, number, tenant, then the second part's letter and value when there is one
ROLLUP_KEY_PATTERN = (r"(?s)^(?P<kind>[dm])(?P<number>[0-9]+)\|t=(?P<tenant>[^|]*)"
                      r"(?:\|(?P<letter>[fmu])=(?P<value>.*))?$")


# -- decisions ---------------------------------------------------------------------------------
BUDGET, CAP, UNPRICED, BASELINE, OPERATOR, USER_MONTHS = "b|", "c|", "u|", "det|", "op|", "um|"


def user_months_key(partition: int) -> str:
    return f"um|{partition}"


def budget_key(policy_id: str, agg_scope: str) -> str:
    return f"b|{policy_id}|{agg_scope}"


def parse_budget_key(key: str) -> tuple[str, str]:
    """(policy id, aggregate scope)."""
    _, policy_id, agg_scope = key.split("|", 2)
    return policy_id, agg_scope


def cap_key(cap_id: str, tenant: str, feature: str, model: str, day: int) -> str:
    return f"c|{cap_id}|{tenant}|{feature}|{model}|{day}"


def parse_cap_key(key: str) -> tuple[str, str, str, str, int]:
    """(cap id, tenant, feature, model, day)."""
    _, cap_id, tenant, feature, model, day = key.split("|")
    return cap_id, tenant, feature, model, int(day)


def unpriced_key(provider: str, model: str) -> str:
    return f"u|{provider}|{model}"


def parse_unpriced_key(key: str) -> tuple[str, str]:
    """(provider, model)."""
    provider, _, model = key[len(UNPRICED):].rpartition("|")
    return provider, model


def baseline_key(rule: str, scope: tuple[str, ...]) -> str:
    return f"det|{rule}|{'|'.join(scope)}"


def parse_baseline_key(key: str) -> tuple[str, tuple[str, ...]]:
    """(rule, scope parts)."""
    rule, _, scope_text = key[len(BASELINE):].partition("|")
    return rule, tuple(scope_text.split("|"))


def operator_key(control_scope_key: str) -> str:
    return OPERATOR + control_scope_key


def parse_operator_key(key: str) -> str:
    """The control scope key (``tenant=.../feature=.../user=.../model=...``)."""
    return key[len(OPERATOR):]


# -- dedupe ------------------------------------------------------------------------------------
def chunk_key(partition: int, first_position: int, first_id: str) -> str:
    """A chunk's key, from what it holds: the same ids read at the same place make the same key
    (a chunk written again after a crash replaces itself), and no two chunks share one."""
    if first_position >= 0:
        return f"chunk:{partition}:{first_position}"
    return f"chunk:{partition}:id={first_id}"


def parse_chunk_key(key: str) -> tuple[int, int | str]:
    """(partition, the first id's position, or its event id when it had none)."""
    _, partition, where = key.split(":", 2)
    return int(partition), (where[3:] if where.startswith("id=") else int(where))


# -- unit cost (decide.unit_costs) ---------------------------------------------------------------
UNIT_COST, OUTCOME, SESSION = "uc|", "uo|", "us|"


def unit_cost_key(policy_id: str, tenant: str, feature: str) -> str:
    """A unit-cost policy's state for one feature of one tenant."""
    return f"{UNIT_COST}{policy_id}|{tenant}|{feature}"


def parse_unit_cost_key(key: str) -> tuple[str, str, str]:
    """(policy id, tenant, feature); ids and tenants hold no ``|``."""
    policy_id, tenant, feature = key[len(UNIT_COST):].split("|", 2)
    return policy_id, tenant, feature


def outcome_key(tenant: str, outcome_id: str) -> str:
    """An outcome counted once (the record is both its dedupe mark and its count)."""
    return f"{OUTCOME}{tenant}|{outcome_id}"


def parse_outcome_key(key: str) -> tuple[str, str]:
    tenant, outcome_id = key[len(OUTCOME):].split("|", 1)
    return tenant, outcome_id


def session_key(period_tag: str, tenant: str, feature: str, session: str) -> str:
    """A session seen in a period (``d<day>`` or ``M<month>``) for a feature."""
    return f"{SESSION}{period_tag}|{tenant}|{feature}|{session}"


def parse_session_key(key: str) -> tuple[str, str, str, str]:
    period_tag, tenant, feature, session = key[len(SESSION):].split("|", 3)
    return period_tag, tenant, feature, session
