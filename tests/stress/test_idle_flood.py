"""Idle connections by the hundred (issue 15, item 18): more than `server.connection-limit` of them, opened
and left silent, do not keep a NAS from its catalog; a limit over 1,000 works (select() could not)."""

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


def probe(port: int) -> float:
    """One catalog request on a fresh connection; its duration."""
    started = time.monotonic()
    status, _, body = exchange(port, build("GET", DSM7, {}), timeout=10)
    assert status == 200 and json.loads(body)["packages"], status
    return time.monotonic() - started


def open_idle(port: int, count: int) -> List[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(count)]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    packages = tmp_path / "packages"
    packages.mkdir()
    for n in range(5):
        build_spk(packages / f"p{n}.spk", {"package": f"p{n}"})
    return packages


def test_idle_flood_at_the_default_limit(folder: Path, run_server: Callable[..., Any], figures: Callable[[str], None]):
    """520 (full: 1,500) silent connections, and a churn of new ones, against the default limit (500)."""
    server = run_server("--packages", str(folder), "--watch", "off")
    idle = open_idle(server.port, sized(520, 1500))
    stop = threading.Event()
    churned: List[socket.socket] = []

    def churn() -> None:  # new idle connections keep coming while the NAS asks
        while not stop.is_set() and len(churned) < 2000:
            churned.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            time.sleep(0.002)

    churner = threading.Thread(target=churn, daemon=True)
    try:
        time.sleep(0.5)
        durations = [probe(server.port)]
        churner.start()
        deadline = time.monotonic() + sized(5, 20)
        while time.monotonic() < deadline:
            durations.append(probe(server.port))
            time.sleep(0.05)
        stop.set()
        churner.join(timeout=10)
        time.sleep(0.5)
        kept = still_open(idle + churned)
    finally:
        stop.set()
        for sock in idle + churned:
            sock.close()
    figures(f"{len(idle)} idle + {len(churned)} churned connections, limit 500: {kept} left open; "
            f"{len(durations)} catalog probes, first {durations[0] * 1000:.0f} ms, "
            f"slowest {max(durations) * 1000:.0f} ms")
    assert max(durations) < 2.0, sorted(durations)[-5:]
    assert kept <= 500 + 8  # the limit, and waitress' headroom
    assert server.json("/health")["status"] == "ok" and "Traceback" not in server.output()


def test_a_limit_over_a_thousand(folder: Path, run_server: Callable[..., Any], figures: Callable[[str], None]):
    """waitress' select() loop failed on the 1,024th socket (ValueError: the server stopped); poll() does not."""
    server = run_server("--packages", str(folder), "--watch", "off", "--connection-limit", "1500")
    idle = open_idle(server.port, 1100)
    try:
        time.sleep(0.5)
        took = probe(server.port)
        kept = still_open(idle)
    finally:
        for sock in idle:
            sock.close()
    figures(f"1,100 idle connections under a limit of 1,500: {kept} kept open, catalog in {took * 1000:.0f} ms")
    assert kept == 1100 and took < 2.0
    assert server.proc.poll() is None and "Traceback" not in server.output()
