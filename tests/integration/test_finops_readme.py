"""The README's "For FinOps" commands run as written, against a seeded store."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

from tests import finops_seed as seed
from tokenbrake.streams.broker import ensure_topics
from tokenbrake.streams.finops import rollup_sql
from tokenbrake.streams.price import PriceBook
from tokenbrake.streams.sink.clickhouse import connect

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## For FinOps", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block
    return [line for line in block.group(1).splitlines() if line.startswith("tokenbrake ")]


def test_readme_finops_commands_run_as_written(tmp_path, broker):
    dsn = f"chdb://{tmp_path / 'chdb'}"
    seed.write(dsn, seed.price(seed.seed_events(), PriceBook()))
    seed.write_audit(dsn)
    client = connect(dsn)  # the rollups as ClickHouse's refresh views keep them
    rollup_sql.refresh_range(client, seed.DB, seed.START, seed.START + timedelta(days=seed.DAYS))
    client.close()
    (tmp_path / "prices.yaml").write_text('prices:\n  - {provider: openai, model: gpt-4o, input_mtok: "2.00", '
                                          'output_mtok: "8.00"}\n')
    (tmp_path / "outcomes.jsonl").write_text(
        '{"outcome_id": "o1", "ts": "2026-03-10T18:00:00Z", "tenant_id": "acme", "feature_id": "chat", '
        '"kind": "ticket_resolved", "value": "0.40"}\n')
    topic = f"outcomes-{uuid.uuid4().hex[:8]}"
    asyncio.run(ensure_topics(broker.bootstrap, {topic: 1}))
    env = {**os.environ, "TOKENBRAKE_CLICKHOUSE_DSN": dsn, "TOKENBRAKE_CLICKHOUSE_DATABASE": seed.DB,
           "TOKENBRAKE_HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "TOKENBRAKE_KAFKA_BOOTSTRAP": broker.bootstrap,
           "TOKENBRAKE_TOPIC_OUTCOMES": topic}
    commands = readme_commands()
    assert {c.split()[1] for c in commands} == {"export", "outcomes", "report", "reprice"}
    for command in commands:
        # as a shell expands it (the one variable the README uses)
        argv = [a.replace("$TOKENBRAKE_KAFKA_BOOTSTRAP", env["TOKENBRAKE_KAFKA_BOOTSTRAP"])
                for a in shlex.split(command)[1:]]
        done = subprocess.run([sys.executable, "-m", "tokenbrake.streams", *argv], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    for name in ("focus-march.csv", "focus-march.parquet", "spend.csv", "users.csv", "controls.csv", "alerts.csv",
                 "outcomes.csv", "report.html"):
        assert (tmp_path / name).stat().st_size > 200, name
