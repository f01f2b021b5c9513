"""Slow and greedy clients: a byte-a-second sender, 200 idle connections and a
10 MB POST body do not keep others waiting; the limits are the schema's waitress
settings (`server.connection-limit`, `server.max-request-body-size`)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest
from spkbuilder import build_spk

from stress import sized
from stress.httpraw import build, exchange, still_open

pytestmark = pytest.mark.stress

DSM7 = "/?arch=apollolake&build=42661&major=7&minor=1&language=enu"
TEN_MB = 10 * 1000 * 1000


def slow_sender(port: int, stop: threading.Event, sent: List[int]) -> None:
    """Send a request one byte per second until told to stop."""
    request = build("GET", DSM7, {"X-Padding": "p" * 200})
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for byte in request:
            if stop.wait(1.0):
                return
            sock.sendall(bytes([byte]))
            sent[0] += 1


def greedy_post(port: int, results: List[Any]) -> None:
    """A 10 MB form body, streamed as fast as the server takes it."""
    head = build("POST", DSM7, {"Content-Type": "application/x-www-form-urlencoded", "Content-Length": str(TEN_MB)})
    results.append(exchange(port, head + b"arch=" + b"x" * (TEN_MB - 5), timeout=30)[0])


def probe(port: int) -> float:
    """One catalog request on a fresh connection; its duration."""
    started = time.monotonic()
    status, _, body = exchange(port, build("GET", DSM7, {}), timeout=10)
    assert status == 200 and json.loads(body)["packages"]
    return time.monotonic() - started


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    packages = tmp_path / "packages"
    packages.mkdir()
    for n in range(20):
        build_spk(packages / f"p{n}.spk", {"package": f"p{n}"})
    return packages


def test_slow_idle_and_greedy_clients(folder: Path, run_server: Callable[..., Any], figures: Callable[[str], None]):
    server = run_server("--packages", str(folder), "--connection-limit", "300")
    stop, sent = threading.Event(), [0]
    slow = threading.Thread(target=slow_sender, args=(server.port, stop, sent), daemon=True)
    slow.start()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
    greedy: List[Any] = []
    posts = [threading.Thread(target=greedy_post, args=(server.port, greedy), daemon=True) for _ in range(3)]
    try:
        for post in posts:
            post.start()
        durations = []
        deadline = time.monotonic() + sized(5, 20)
        while time.monotonic() < deadline or len(durations) < 20:
            durations.append(probe(server.port))
            time.sleep(0.05)
        for post in posts:
            post.join(timeout=60)
    finally:
        stop.set()
        for sock in idle:
            sock.close()
    slow.join(timeout=5)
    figures(
        f"{len(durations)} probes beside 1 slow sender ({sent[0]} bytes sent), 200 idle connections and "
        f"3 x 10 MB POSTs (answered {greedy}): slowest {max(durations) * 1000:.0f} ms"
    )
    assert max(durations) < 1.0, sorted(durations)[-5:]
    assert greedy == [413, 413, 413]  # server.max-request-body-size (1 MiB by default)
    assert server.json("/health")["status"] == "ok" and "Traceback" not in server.output()


def test_body_limit_comes_from_the_setting(folder: Path, run_server: Callable[..., Any]):
    """Raised to 16 MiB, the same 10 MB POST is read, and the NAS gets its catalog."""
    server = run_server("--packages", str(folder), "--max-request-body-size", "16MiB")
    results: List[Any] = []
    greedy_post(server.port, results)
    assert results == [200]
    assert probe(server.port) < 1.0


def test_connection_limit_comes_from_the_setting(folder: Path, run_server: Callable[..., Any]):
    """Over `server.connection-limit`, the longest-idle connections are closed and a new client is served:
    the setting is the one in force."""
    server = run_server("--packages", str(folder), "--connection-limit", "10")
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(30)]
    try:
        time.sleep(0.5)  # let waitress accept them all
        assert probe(server.port) < 1.0
        time.sleep(0.3)
        kept, oldest_kept = still_open(idle), still_open(idle[:15])
    finally:
        for sock in idle:
            sock.close()
    assert 9 <= kept <= 10 and oldest_kept == 0, (kept, oldest_kept)
