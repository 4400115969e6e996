"""A test CA and a TLS-terminating TCP proxy (ssl module) in front of the embedded broker.

The broker advertises the proxy's address (``EmbeddedBroker(advertised=...)``), so every
connection a client opens after reading metadata goes through the proxy too: nothing reaches
the broker in plaintext from a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
import threading
from pathlib import Path


def make_test_ca(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost, made with the openssl CLI
    (the venv has no ``cryptography``). Returns the paths: ca, cert, key, other_ca."""
    directory.mkdir(parents=True, exist_ok=True)
    p = {name: directory / f"{name}.pem" for name in ("ca", "ca_key", "cert", "key", "csr", "other_ca", "other_key")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    for ca, key, cn in (("ca", "ca_key", "tokenbrake test CA"), ("other_ca", "other_key", "somebody else's CA")):
        _openssl("req", "-x509", *ec, "-keyout", p[key], "-out", p[ca], "-days", "2", "-subj", f"/CN={cn}", *ca_ext)
    _openssl("req", *ec, "-keyout", p["key"], "-out", p["csr"], "-subj", "/CN=127.0.0.1")
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey", p["ca_key"], "-CAcreateserial",
             "-out", p["cert"], "-days", "2", "-extfile", ext)
    return p


def _openssl(*args: object) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


class TLSProxy:
    """Accepts TLS on ``127.0.0.1:port`` and relays the plaintext to ``127.0.0.1:target_port``,
    on its own event loop in a thread (the worker under test is another process)."""

    def __init__(self, port: int, target_port: int, certfile: Path, keyfile: Path) -> None:
        self.port, self.target_port = port, target_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(certfile, keyfile)
        self.handshakes = 0  # TLS sessions established (a client that fails verification never counts)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> TLSProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self.context), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.close()
