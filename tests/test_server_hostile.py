"""The real server against hostile clients and signals (issue 15): forged log lines, smuggling-shaped
framing, idle connections at the limit, SIGTERM during a download, SIGHUP."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import List

import pytest
from conftest import read_snapshot, wait_for
from spkbuilder import build_spk
from stress.httpraw import build, exchange

from spklite import listener

ROOT = Path(__file__).resolve().parent.parent
DSM7 = "/?arch=apollolake&build=42661&major=7&minor=1&language=enu"


def access_lines(server, marker: str) -> List[str]:
    return [line for line in server.output().splitlines() if marker in line]


# Access log (item 14) ###############################################################################


def test_control_characters_cannot_forge_access_log_lines(run_server, packages):
    server = run_server("--packages", str(packages), "--watch", "off")
    forged = "/zz%0D%0A1.2.3.4%20-%20%22GET%20/forged%20HTTP/1.1%22%20200"
    assert exchange(server.port, build("GET", forged, {}))[0] == 404
    # waitress refuses raw bytes over 127 in a request line, takes percent-encoded ones and raw ASCII controls.
    raw = b"GET /caf%C3%A9%FF%7F%5C%22?q=\x1b[31mred&ds_sn=SECRET%0A HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert exchange(server.port, raw)[0] == 404
    assert wait_for(lambda: access_lines(server, "red"), timeout=5)

    lines = access_lines(server, "forged")
    assert len(lines) == 1 and "/zz\\r\\n1.2.3.4 - \\\"GET /forged HTTP/1.1\\\" 200" in lines[0]
    output = server.output()
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", output)  # nothing a terminal would act on
    [line] = access_lines(server, "red")
    # UTF-8 read as such, a byte that is not UTF-8 as \xNN, quote and backslash escaped; the serial masked
    assert '"GET /café\\xff\\x7f\\\\\\"?q=\\x1b[31mred&ds_sn=***" 404' in line, line
    assert "SECRET" not in output


# Request framing (item 19) ##########################################################################


def answers(port: int, request: bytes, timeout: float = 3.0) -> List[bytes]:
    """The status lines that come back on one connection (read until it closes or is quiet for `timeout`)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return re.findall(rb"HTTP/1\.[01] \d{3}", received)


@pytest.mark.parametrize("head", [
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n",
    b"POST / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    b"POST / HTTP/1.2\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
], ids=["te-cl", "cl-te", "http10-te", "http12-te"])
def test_a_request_with_both_framings_is_answered_then_the_connection_closed(run_server, packages, head):
    """RFC 9112 6.1: Content-Length with Transfer-Encoding (or Transfer-Encoding in HTTP/1.0) may be a
    smuggling attempt; what follows it on the connection is not answered."""
    server = run_server("--packages", str(packages), "--watch", "off")
    pipelined = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    assert len(answers(server.port, head + b"\r\n0\r\n\r\n" + pipelined)) == 1
    # A plain pipelined pair still gets both answers (the last closes the connection: no wait).
    last = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert len(answers(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\narch=" + last)) == 2


# Idle connections (item 18) #########################################################################


def test_idle_connections_over_the_limit_do_not_lock_out_a_new_client(run_server, packages):
    spk = build_spk(packages / "a.spk", {"package": "a"}, package_tgz=os.urandom(24 << 20))
    server = run_server("--packages", str(packages), "--watch", "off", "--connection-limit", "20")
    # A download in progress is not idle: it is never the one closed.
    download = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    download.request("GET", "/download/a.spk")
    response = download.getresponse()
    first = response.read(1 << 20)
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(60)]
    try:
        started = time.monotonic()
        status, _, body = exchange(server.port, build("GET", DSM7, {}), timeout=5)
        took = time.monotonic() - started
        assert status == 200 and json.loads(body)["packages"], status
        assert took < 2.0, took
        assert first + response.read() == spk.read_bytes()
    finally:
        for sock in idle:
            sock.close()
        download.close()
    assert "Traceback" not in server.output()


# Signals (item 17) ##################################################################################


def big_download(server, spk: Path, first: int = 1 << 20):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", f"/download/{spk.name}")
    response = conn.getresponse()
    assert response.status == 200
    return conn, response, response.read(first)


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_a_running_download_finish(run_server, packages, tmp_path):
    spk = build_spk(packages / "big.spk", {"package": "big"}, package_tgz=os.urandom(40 << 20))
    server = run_server("--packages", str(packages), "--watch", "off")
    conn, response, received = big_download(server, spk)
    server.proc.send_signal(signal.SIGTERM)
    assert wait_for(lambda: refused(server.port), timeout=3)  # no new connections
    time.sleep(1.0)
    assert server.proc.poll() is None  # still sending
    received += response.read()  # the rest, to the end (socket timeout 10 s)
    conn.close()
    assert hashlib.sha256(received).digest() == hashlib.sha256(spk.read_bytes()).digest()
    assert server.proc.wait(timeout=5) == 0
    assert list(read_snapshot(tmp_path / "home" / "cache")["files"]) == ["big.spk"]
    assert "Traceback" not in server.output()


def test_a_second_sigterm_stops_at_once(run_server, packages, tmp_path):
    spk = build_spk(packages / "big.spk", {"package": "big"}, package_tgz=os.urandom(40 << 20))
    server = run_server("--packages", str(packages), "--watch", "off")
    conn, _, _ = big_download(server, spk)  # and read no more: the download stalls
    try:
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.proc.poll() is None  # waiting for the download
        server.proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        assert server.proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 2.5
    finally:
        conn.close()
    assert list(read_snapshot(tmp_path / "home" / "cache")["files"]) == ["big.spk"]
    assert "Traceback" not in server.output()


def test_sighup_rescans_and_the_server_keeps_running(run_server, packages, tmp_path):
    build_spk(packages / "a.spk", {"package": "a"})
    server = run_server("--packages", str(packages), "--watch", "off")
    build_spk(packages / "b.spk", {"package": "b"})
    server.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: server.json("/health")["packages"] == 2, timeout=5)
    assert server.proc.poll() is None
    assert server.stop(signal.SIGTERM) == 0
    assert list(read_snapshot(tmp_path / "home" / "cache")["files"]) == ["a.spk", "b.spk"]
    assert "SIGHUP" in server.output() and "Traceback" not in server.output()


def test_the_shutdown_deadline_fits_every_service_manager():
    """systemd, procd and DSM's start-stop-status kill what is still running after their stop timeout:
    the downloads' deadline, then the snapshot write, must fit in it."""
    margin = 5.0  # worker threads, watcher and snapshot after the downloads
    unit = (ROOT / "systemd" / "spklite.service").read_text()
    systemd = float(re.search(r"^TimeoutStopSec=(\d+)s?$", unit, re.M).group(1))
    init = (ROOT / "openwrt" / "files" / "spklite.init").read_text()
    procd = float(re.search(r"procd_set_param term_timeout (\d+)", init).group(1))
    script = (ROOT / "synology" / "scripts" / "start-stop-status").read_text()
    stop = script[script.index("stop()"):]
    tries, pause = re.search(r"tries=(\d+)", stop).group(1), re.search(r"sleep ([\d.]+)", stop).group(1)
    synology = int(tries) * float(pause)
    for manager, timeout in (("systemd", systemd), ("procd", procd), ("start-stop-status", synology)):
        assert listener.SHUTDOWN_DEADLINE + margin <= timeout, (manager, timeout)


def test_systemctl_reload_rescans():
    unit = (ROOT / "systemd" / "spklite.service").read_text()
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", unit, re.M)
