#!/usr/bin/env python3
"""Resident memory of `latchkey serve` with N idle status-stream subscribers.

Starts the given latchkey binary on a free loopback port with a temporary data
directory, reads VmRSS, opens N connections to /v1/status/stream (each reads
the `ready` event and then stays idle), reads VmRSS again, and prints the
cost per subscriber. Bounded: it stops by itself and kills the server.

    python3 tools/sse_idle_memory.py target/release/latchkey 500
"""
import os
import socket
import subprocess
import sys
import tempfile
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    binary, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 500
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp()
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", f"{tmp}/data",
         "--keys-dir", f"{tmp}/keys", "--bootstrap-token-file", f"{tmp}/token"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sockets = []
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        time.sleep(0.5)
        before = rss_kib(server.pid)
        request = f"GET /v1/status/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
        for _ in range(count):
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            conn.sendall(request)
            data = b""
            while b"event: ready" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    raise RuntimeError("stream closed")
                data += chunk
            sockets.append(conn)
        time.sleep(1.0)
        after = rss_kib(server.pid)
        per = (after - before) / count
        print(f"idle subscribers: {count}")
        print(f"VmRSS before: {before} KiB, after: {after} KiB")
        print(f"cost per idle subscriber: {per:.1f} KiB")
    finally:
        for conn in sockets:
            conn.close()
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
