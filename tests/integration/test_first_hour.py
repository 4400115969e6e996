"""A new user's first hour on real parts: a worker whose home does not exist yet, found by
`tokenbrake status` without TOKENBRAKE_WEB_PORT, and an operator's `tokenbrake control`
landing in ClickHouse's audit trail (control_events), once, across a restart."""

from __future__ import annotations

import time
from pathlib import Path

from tokenbrake.schemas.codec import loads
from tokenbrake.streams import cli
from tokenbrake.streams.sink.clickhouse import ClickHouseWriter


def _operator_rows(home: Path) -> list[tuple]:
    writer = ClickHouseWriter(f"chdb://{home / 'chdb'}", "tokenbrake")
    try:
        return writer.client.query("SELECT scope_key, action, issued_by, detail FROM tokenbrake.control_events "
                                   "FINAL WHERE issued_by = 'operator'").result_rows
    finally:
        writer.close()


def _wait_control(worker, scope: str, action: str, timeout_s: float = 30.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(c["scope"] == scope and c["action"] == action for c in worker.status()["controls"]):
            return
        time.sleep(0.2)
    raise AssertionError(f"no {action} on {scope}: {worker.status()['controls']}\n{worker.log_tail()}")


def test_first_hour_home_status_and_the_operator_audit_trail(worker_env, broker, tmp_path, monkeypatch, capsys):
    home = tmp_path / "not" / "created" / "yet"
    worker = worker_env("", home=str(home)).start()  # as the Dockerfile's /var/lib/tokenbrake on a fresh container
    assert (home / "faust").is_dir() and (home / "worker.json").is_file()

    for name, value in worker.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TOKENBRAKE_WEB_PORT")  # another shell: the worker is found through its home
    capsys.readouterr()
    assert cli.main(["status", "--json"]) == 0
    assert loads(capsys.readouterr().out)["ready"] is True

    assert cli.main(["control", "block", "--tenant", "acme", "--ttl", "1h", "--reason", "on-call: runaway"]) == 0
    scope = "tenant=acme/feature=*/user=*/model=*"
    _wait_control(worker, scope, "block")
    worker.stop()  # the stop flushes the sink; chdb is readable once the writer is gone
    assert _operator_rows(home) == [(scope, "block", "operator", "on-call: runaway")]

    worker.start()  # reads the control topic from the start again: the same row, replaced, not added
    _wait_control(worker, scope, "block")
    worker.stop()
    assert _operator_rows(home) == [(scope, "block", "operator", "on-call: runaway")]
    assert not (home / "worker.json").exists()  # a stopped worker is not "found"


def test_docker_compose_mounts_the_example_policies_or_yours(tmp_path):
    import shutil
    import subprocess

    binary = shutil.which("docker-compose")
    assert binary, "docker-compose (Debian package) is installed by `make test`"
    root = Path(__file__).resolve().parents[2]

    def mounts(env: str) -> list[str]:
        (tmp_path / ".env").write_text("TOKENBRAKE_CONTROL_SIGNING_KEYS=k1:a-long-random-secret\n" + env)
        out = subprocess.run([binary, "--env-file", str(tmp_path / ".env"), "-f", str(root / "docker-compose.yml"),
                              "config"], capture_output=True, text=True, cwd=root, check=False)
        assert out.returncode == 0, out.stderr
        return [line.strip() for line in out.stdout.splitlines() if "/etc/tokenbrake/policies.yaml:ro" in line]

    assert mounts("") == [f"- {root / 'examples' / 'policies.yaml'}:/etc/tokenbrake/policies.yaml:ro"]
    assert mounts("TOKENBRAKE_POLICIES_FILE=./my-policies.yaml\n") == [
        f"- {root / 'my-policies.yaml'}:/etc/tokenbrake/policies.yaml:ro"]
