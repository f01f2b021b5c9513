"""A big upload (500 MB with `make stress`) lands whole, and the server's memory does not grow with it."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, List

import pytest
from spkbuilder import DEFAULT_INFO, info_text

from spklite import publish
from stress import sized

pytestmark = pytest.mark.stress

KEY, ENTRY = publish.new_key("ci")


def big_spk(path: Path, payload: int) -> None:
    """An SPK whose package.tgz holds `payload` bytes, written by streaming (never whole in this process)."""
    info = info_text({**DEFAULT_INFO, "package": "big", "arch": "noarch"})
    zeros = path.with_suffix(".payload")
    with open(zeros, "wb") as fh:
        fh.truncate(payload)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        member = tarfile.TarInfo("INFO")
        member.size = len(info)
        tar.addfile(member, io.BytesIO(info))
        tar.add(zeros, arcname="package.tgz")
    zeros.unlink()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) << 10 for line in status if line.startswith("VmRSS:"))


def test_a_big_upload_streams(tmp_path: Path, run_server: Callable[..., Any], figures: Callable[[str], None]) -> None:
    payload = sized(64 << 20, 500 << 20)
    folder = tmp_path / "packages"
    folder.mkdir()
    spk = tmp_path / "big.spk"
    big_spk(spk, payload)
    server = run_server("--packages", str(folder), "--publish-key", ENTRY)
    pid = server.proc.pid
    before = rss(pid)
    peak: List[int] = [before]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss(pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        with open(spk, "rb") as body:
            connection.request("POST", "/packages", body=body, headers={
                "Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode(),
                "Content-Length": str(spk.stat().st_size)})
            response = connection.getresponse()
            answer = json.loads(response.read())
        connection.close()
    finally:
        stop.set()
        watcher.join()
    took = time.monotonic() - started
    assert response.status == 201, answer
    digest = hashlib.md5()
    with open(spk, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    assert answer["size"] == spk.stat().st_size and answer["md5"] == digest.hexdigest()
    figures(f"{answer['size'] >> 20} MiB upload: 201 in {took:.1f} s, server memory "
            f"{before / 2**20:.1f} -> peak {peak[0] / 2**20:.1f} MiB")
    assert peak[0] - before < 16 << 20
