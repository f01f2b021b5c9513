"""Signals against a busy server (issue 15, item 17): a stalled download holds a stop no longer than the
deadline; a storm of SIGHUPs during downloads leaves the server up and the downloads whole."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest
from conftest import read_snapshot
from spkbuilder import build_spk

from spklite import listener
from stress import sized

pytestmark = pytest.mark.stress


def test_a_stalled_download_holds_the_stop_until_the_deadline(
    tmp_path: Path, packages: Path, run_server: Callable[..., Any], figures: Callable[[str], None]
):
    build_spk(packages / "big.spk", {"package": "big"}, package_tgz=os.urandom(40 << 20))
    server = run_server("--packages", str(packages), "--watch", "off")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/download/big.spk")
        conn.getresponse().read(1 << 20)  # then nothing more: the server's socket buffers fill
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=listener.SHUTDOWN_DEADLINE + 5) == 0
        took = time.monotonic() - started
    finally:
        conn.close()
    figures(f"stalled 40 MB download: exit 0 {took:.1f} s after SIGTERM (deadline {listener.SHUTDOWN_DEADLINE:.0f} s)")
    assert listener.SHUTDOWN_DEADLINE - 0.5 <= took <= listener.SHUTDOWN_DEADLINE + 2.5
    assert list(read_snapshot(tmp_path / "home" / "cache")["files"]) == ["big.spk"]
    assert "stopping anyway" in server.output() and "Traceback" not in server.output()


def test_sighup_storm_during_downloads(
    packages: Path, run_server: Callable[..., Any], figures: Callable[[str], None]
):
    for n in range(20):
        build_spk(packages / f"p{n}.spk", {"package": f"p{n}"})
    big = build_spk(packages / "big.spk", {"package": "big"}, package_tgz=os.urandom(8 << 20))
    expected = hashlib.sha256(big.read_bytes()).digest()
    server = run_server("--packages", str(packages), "--watch", "off")
    results: List[bool] = []

    def download() -> None:
        for _ in range(sized(3, 10)):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request("GET", "/download/big.spk")
            results.append(hashlib.sha256(conn.getresponse().read()).digest() == expected)
            conn.close()

    clients = [threading.Thread(target=download, daemon=True) for _ in range(4)]
    for client in clients:
        client.start()
    hangups = 0
    while any(client.is_alive() for client in clients) and hangups < 2000:
        server.proc.send_signal(signal.SIGHUP)
        hangups += 1
        time.sleep(0.002)
    for client in clients:
        client.join(timeout=60)
    figures(f"{hangups} SIGHUPs during {len(results)} downloads of 8 MB: {results.count(True)} whole")
    assert results and all(results) and len(results) == 4 * sized(3, 10)
    assert server.json("/health")["packages"] == 21
    assert server.stop(signal.SIGTERM) == 0 and "Traceback" not in server.output()
