"""The real `spklite` process on a loopback port (SPEC 3.3, 3.4)."""

from __future__ import annotations

import http.client
import json
import platform
import shutil
import signal
import socket
import threading
import time
from typing import List

import pytest
from conftest import read_snapshot, wait_for
from spkbuilder import build_spk

DSM7 = "/?arch=apollolake&build=42661&major=7&minor=1&language=enu&ds_sn=SERIAL0042"


def test_catalog_download_range_and_clean_exit(run_server, packages, tmp_path):
    spk = build_spk(packages / "a.spk", {"package": "a", "version": "1.0-1"})
    server = run_server("--packages", str(packages))
    status, headers, body = server.get(DSM7)
    entries = json.loads(body)["packages"]
    assert status == 200 and [e["package"] for e in entries] == ["a"]
    assert entries[0]["link"] == f"{server.url}/download/a.spk"
    status, headers, part = server.get("/download/a.spk", headers={"Range": "bytes=100-1123"})
    assert status == 206 and part == spk.read_bytes()[100:1124]
    assert headers["Content-Range"] == f"bytes 100-1123/{spk.stat().st_size}"
    assert server.get("/download/a.spk")[2] == spk.read_bytes()

    assert server.stop(signal.SIGTERM) == 0
    log = server.output()
    assert "Traceback" not in log
    assert "SERIAL0042" not in log and "ds_sn=***" in log  # the serial number is masked
    assert list(read_snapshot(tmp_path / "home" / "cache")["files"]) == ["a.spk"]


def test_restart_uses_the_snapshot(run_server, packages, tmp_path):
    for n in range(20):
        build_spk(packages / f"p{n}.spk", {"package": f"p{n}"})
    first = run_server("--packages", str(packages))
    assert first.json("/health")["parsed"] == 20
    assert wait_for(lambda: first.json("/health")["md5_pending"] == 0)
    assert first.stop(signal.SIGINT) == 0
    second = run_server("--packages", str(packages))
    health = second.json("/health")
    assert (health["parsed"], health["from_snapshot"], health["packages"]) == (0, 20, 20)
    assert all("md5" in e for e in json.loads(second.get(DSM7)[2])["packages"])


def test_new_file_is_visible_at_once(run_server, packages, tmp_path):
    server = run_server("--packages", str(packages))
    assert server.json("/health")["watch"] == "inotify"
    staged = build_spk(tmp_path / "new.spk", {"package": "new"})
    shutil.copy(staged, packages / "new.spk")
    assert wait_for(lambda: server.json("/health")["packages"] == 1, timeout=5)


def test_client_disconnecting_mid_download(run_server, packages):
    import os

    build_spk(packages / "big.spk", {"package": "big"}, package_tgz=os.urandom(8 << 20))
    server = run_server("--packages", str(packages))
    for _ in range(5):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("GET", "/download/big.spk")
        response = conn.getresponse()
        response.read(1000)
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
    time.sleep(0.2)
    assert server.json("/health")["status"] == "ok"
    assert server.proc.poll() is None


def test_port_in_use_is_a_clear_error(run_server, packages, tmp_path):
    server = run_server("--packages", str(packages))
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "spklite", "--home", str(tmp_path / "home2"), "--host", "127.0.0.1",
         "--port", str(server.port), "--packages", str(packages), "--watch", "off"],
        capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and str(server.port) in result.stderr


def test_forwarded_headers_only_from_the_trusted_proxy(run_server, packages):
    build_spk(packages / "a.spk", {"package": "a"})
    forwarded = {"X-Forwarded-Host": "pkgs.example.org", "X-Forwarded-Proto": "https"}
    plain = run_server("--packages", str(packages), "--watch", "off")
    link = json.loads(plain.get(DSM7, headers=forwarded)[2])["packages"][0]["link"]
    assert link == f"{plain.url}/download/a.spk"
    plain.stop()
    proxied = run_server("--packages", str(packages), "--watch", "off", "--trusted-proxy", "127.0.0.1")
    link = json.loads(proxied.get(DSM7, headers=forwarded)[2])["packages"][0]["link"]
    assert link == "https://pkgs.example.org/download/a.spk"


def test_first_run_makes_the_default_packages_folder(run_server, tmp_path):
    home = tmp_path / "fresh"
    server = run_server(home=home)
    assert (home / "packages").is_dir() and (home / "config.yml").is_file()
    assert server.json("/health")["packages"] == 0
    build_spk(home / "packages" / "a.spk", {"package": "a"})
    assert wait_for(lambda: server.json("/health")["packages"] == 1)


def malloc_heaps(pid: int) -> int:
    """glibc's malloc arenas besides the main one: each is a heap of anonymous memory at a 64 MiB boundary."""
    count = 0
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) == 5 and int(fields[0].split("-")[0], 16) % (64 << 20) == 0:
                count += 1
    return count


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's arenas")
def test_threads_share_two_malloc_arenas(run_server, packages):
    """glibc gives each thread that allocates an arena of its own (up to 8 per core), each keeping what its
    thread freed: RSS grew from 24 to 60-90 MiB after downloads with 8 threads. The server limits them to two
    (issue 12), before its threads start."""
    for n in range(20):
        build_spk(packages / f"p{n}.spk", {"package": f"p{n}", "description": "d" * 2000})
    server = run_server("--packages", str(packages), "--threads", "8")

    answered: List[int] = []

    def client(n: int) -> None:
        for i in range(30):
            answered.append(server.get(f"/?arch=apollolake&build={40000 + n * 100 + i}&language=l{i}&unique=u{n}")[0])
            answered.append(server.get(f"/download/p{(n + i) % 20}.spk")[0])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answered == [200] * 8 * 30 * 2  # every thread did its work (a thread's exception is only a warning)
    assert server.get(DSM7)[0] == 200
    assert malloc_heaps(server.proc.pid) <= 1


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_parallel_downloads_hold_little_memory(run_server, packages):
    """waitress reads a file in pieces as large as the socket's send buffer (~4 MB on loopback): 8 downloads
    held 30 MiB at once. The server hands it at most 512 KiB a read (issue 12)."""
    build_spk(packages / "big.spk", {"package": "big"}, package_tgz=bytes(24 << 20))
    server = run_server("--packages", str(packages), "--threads", "8")
    pid = server.proc.pid
    assert len(server.get("/download/big.spk")[2]) > 24 << 20
    before = peak = rss_kib(pid)

    received: List[int] = []

    def download() -> None:
        got = 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"GET /download/big.spk HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            while True:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                got += len(chunk)
        received.append(got)

    threads = [threading.Thread(target=download) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while any(thread.is_alive() for thread in threads) and time.monotonic() < deadline:
        peak = max(peak, rss_kib(pid))
        time.sleep(0.005)
    for thread in threads:
        thread.join(30)
    assert len(received) == 8 and min(received) > 24 << 20, received  # each download whole: memory was tested
    print(f"RSS {before / 1024:.1f} -> peak {peak / 1024:.1f} MiB")
    assert (peak - before) / 1024 < 12, f"RSS {before / 1024:.1f} -> peak {peak / 1024:.1f} MiB"
