"""The core is a boundary, not a convention: its modules import no Kafka, Faust or ClickHouse
client, and read no clock and no randomness of their own (a clock is injected: the worker's
wall clock, or event time in a backtest). Checked on the source (AST), so an import inside a
function counts too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: the pure core: the pipeline stages and their state, the engine that runs them, its assembly, the detectors
STAGES = ("ingest", "price", "aggregate", "decide", "emit", "state")
CORE = [path for stage in STAGES for path in sorted((ROOT / "streams" / stage).rglob("*.py"))] + [
    ROOT / "streams" / "engine.py", ROOT / "streams" / "setup.py",
    *sorted((ROOT / "detectors").glob("*.py")),
]
FORBIDDEN = {"faust", "mode", "aiokafka", "clickhouse_connect", "chdb", "time", "random", "uuid", "secrets"}
#: reading the wall clock without importing ``time``
CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}


def _violations(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""] if node.level == 0 else []
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in CLOCK_CALLS:
            found.append(f"{path.relative_to(root)}:{node.lineno}: {node.func.value.id}.{node.func.attr}()")
            continue
        else:
            continue
        found += [f"{path.relative_to(root)}:{node.lineno}: imports {name}" for name in names
                  if name.split(".")[0] in FORBIDDEN]
    return found


def test_the_core_is_listed():
    assert len(CORE) > 30 and all(path.is_file() for path in CORE)


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_imports_no_broker_client_clock_or_randomness(path):
    assert _violations(path) == []


def test_the_check_finds_what_it_forbids(tmp_path):
    """The check itself fails on each thing it forbids (so a pass means something)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom aiokafka.partitioner import murmur2\ndef f():\n    import random\n"
                   "    from datetime import datetime\n    return datetime.now()\nimport faust.types\n")
    found = _violations(bad, tmp_path)
    assert [v.split(": ", 1)[1] for v in found] == [
        "imports time", "imports aiokafka.partitioner", "imports faust.types", "imports random", "datetime.now()"]


def test_not_in_the_future_is_judged_by_the_injected_clock():
    from tests.helpers import NOW_MS, engine, event
    from tokenbrake.streams.ingest.dedupe import Seen

    yesterday = engine(clock=lambda: NOW_MS - 86_400_000)
    assert yesterday.process(event(ts=NOW_MS)) is Seen.FUTURE  # ahead of *its* clock, whatever the wall says
    assert engine(clock=lambda: NOW_MS).process(event(ts=NOW_MS)) is not Seen.FUTURE
