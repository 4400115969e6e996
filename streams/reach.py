"""Checks a command makes before it starts, so a mistake gets one line instead of a traceback
(``KafkaConnectionError`` with unclosed-consumer noise, or 51 lines ending in "address in use")."""

from __future__ import annotations

import socket
import sys


def broker_problem(bootstrap: str, timeout_s: float = 3.0) -> str | None:
    """None when some ``host:port`` of ``bootstrap`` accepts a connection, else why none did."""
    problems = []
    for address in filter(None, (a.strip() for a in bootstrap.split(","))):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host or "localhost", int(port)), timeout=timeout_s):
                return None
        except ValueError:
            problems.append(f"{address}: not host:port")
        except OSError as exc:
            problems.append(f"{address}: {exc.strerror or type(exc).__name__}")
    if len(problems) == 1:
        return problems[0].partition(": ")[2]
    return "; ".join(problems) or "no address given"


def port_problem(host: str, port: int) -> str | None:
    """None when ``host:port`` can be listened on (as the worker's web endpoint will), else why not."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does: TIME_WAIT is no clash
    try:
        sock.bind((host, port))
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    finally:
        sock.close()
    return None


def require_broker(bootstrap: str, command: str) -> None:
    """One line and exit code 1 when no broker answers at ``bootstrap``."""
    if (problem := broker_problem(bootstrap)) is not None:
        print(f"{command}: no Kafka broker answered at {bootstrap} ({problem}); start one (`tokenbrake broker`) "
              "or give its address with --bootstrap HOST:PORT / TOKENBRAKE_KAFKA_BOOTSTRAP", file=sys.stderr)
        raise SystemExit(1)


def require_free_port(host: str, port: int, command: str) -> None:
    """One line and exit code 1 when the worker's web endpoint could not listen."""
    if (problem := port_problem(host, port)) is not None:
        print(f"{command}: the web port {host}:{port} is not free ({problem}; another worker?); "
              "set TOKENBRAKE_WEB_PORT to a free port", file=sys.stderr)
        raise SystemExit(1)
