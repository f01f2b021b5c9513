"""Download counts under kill -9 at random moments (issue 14): during downloads and during the writes of
counts.json, every download a client received was counted, and none twice."""

from __future__ import annotations

import http.client
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, List

import pytest
from conftest import wait_for
from spkbuilder import build_spk

from stress import sized

pytestmark = pytest.mark.stress


def downloader(port: int, names: List[str], stop: threading.Event, sent: List[int], received: List[int],
               seed: int) -> None:
    """Download until stopped (or the server is gone): `sent` counts requests, `received` whole answers."""
    rng = random.Random(seed)
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            sent[0] += 1
            conn.request("GET", "/download/" + rng.choice(names))
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                received[0] += 1
        except (OSError, http.client.HTTPException):
            return  # killed
        finally:
            conn.close()


def test_kill_9_during_downloads_and_count_writes_loses_and_doubles_nothing(packages: Path, run_server: Any,
                                                                             figures: Any) -> None:
    names = [build_spk(packages / f"p{i}.spk", {"package": f"p{i}", "version": "1.0-1", "arch": "noarch"}).name
             for i in range(3)]
    rng = random.Random(14)
    trials = sized(6, 40)
    sent_total = received_total = 0
    for trial in range(trials):
        server = run_server("--packages", str(packages), "--server-counts-interval", "1")
        assert wait_for(lambda s=server: s.json("/health")["md5_pending"] == 0)
        counted = server.json("/v1/stats")["downloads"]
        assert received_total <= counted <= sent_total, (trial, received_total, counted, sent_total)
        stop = threading.Event()
        sent: List[List[int]] = [[0] for _ in range(4)]
        received: List[List[int]] = [[0] for _ in range(4)]
        threads = [threading.Thread(target=downloader, args=(server.port, names, stop, sent[i], received[i],
                                                              trial * 10 + i)) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.2, 2.5))  # across the 1 s writes of counts.json
        server.stop(signal.SIGKILL)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
            assert not thread.is_alive()
        sent_total += sum(s[0] for s in sent)
        received_total += sum(r[0] for r in received)
    server = run_server("--packages", str(packages))
    counted = server.json("/v1/stats")["downloads"]
    assert received_total <= counted <= sent_total
    figures(f"{trials} kill -9 during downloads: {received_total} downloads received whole, {counted} counted, "
            f"{sent_total} asked for")
