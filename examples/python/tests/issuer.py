"""Starts a real `latchkey serve` for the tests: a free loopback port, a
throwaway data directory, and the bootstrap admin token read from
`--bootstrap-token-file`. The binary is $LATCHKEY_BIN (default: the
workspace's target/debug/latchkey)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
STATUS_LIST_TTL = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveIssuer:
    def __init__(self):
        self.bin = os.environ.get("LATCHKEY_BIN") or str(ROOT / "target" / "debug" / "latchkey")
        if not os.access(self.bin, os.X_OK):
            raise RuntimeError(f"latchkey binary not found at {self.bin}: "
                               "build it (cargo build --bin latchkey) or set LATCHKEY_BIN")
        self.dir = tempfile.mkdtemp(prefix="latchkey-python-example-")
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        token_file = os.path.join(self.dir, "bootstrap.token")
        env = {k: v for k, v in os.environ.items() if k != "LATCHKEY_CONFIG"}
        env["LATCHKEY_LOG"] = "warn"
        self.log = open(os.path.join(self.dir, "server.log"), "wb")
        self.process = subprocess.Popen(
            [self.bin, "serve", "--listen", f"127.0.0.1:{port}", "--issuer", self.url,
             "--data-dir", os.path.join(self.dir, "data"), "--keys-dir", os.path.join(self.dir, "keys"),
             "--bootstrap-token-file", token_file, "--status-list-ttl-secs", str(STATUS_LIST_TTL)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        try:
            self.admin_token = self._wait_ready(token_file)
        except Exception:
            self.stop()
            raise

    def _wait_ready(self, token_file: str) -> str:
        # At most 30 s: 150 tries, 200 ms apart.
        for _ in range(150):
            if self.process.poll() is not None:
                raise RuntimeError(f"latchkey exited early:\n{self.server_log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    token = Path(token_file).read_text().strip() if os.path.exists(token_file) else ""
                    if r.status == 200 and token:
                        return token
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"latchkey did not become ready in 30 s:\n{self.server_log()}")

    def server_log(self) -> str:
        self.log.flush()
        return Path(self.dir, "server.log").read_text(errors="replace")[-5000:]

    def api(self, method: str, path: str, body=None, token: str | None = None):
        """Calls the admin API; returns (status, parsed JSON or None)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}",
            "Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        return status, (json.loads(raw) if raw else None)

    def create_key(self, name: str, roles, accounts=None, **extra) -> dict:
        body = {"name": name, "roles": roles, **extra}
        if accounts is not None:
            body["accounts"] = accounts
        status, created = self.api("POST", "/v1/keys", body)
        assert status == 201, (status, created)
        return created  # {"key": {...}, "token": "..."}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
