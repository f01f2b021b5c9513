"""Downloads in a hostile world (issue 15): files changed, truncated or swapped for FIFOs while they are
being sent, file names with control characters or bytes that are not UTF-8, If-Range, odd Range units."""

from __future__ import annotations

import http.client
import os
import socket
import time
from pathlib import Path

import pytest
from conftest import wait_for
from spkbuilder import build_spk

BIG = 32 << 20  # more than loopback's socket buffers hold: the server is still reading the file when it changes


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_download(port: int, path: str) -> http.client.HTTPResponse:
    """A GET whose headers have arrived and whose body is not read yet (every socket read has a timeout)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    return conn.getresponse()


def read_body(response: http.client.HTTPResponse) -> bytes:
    """The whole body, or what came before the server closed early (a timeout raises: the test fails)."""
    try:
        return response.read()
    except http.client.IncompleteRead as exc:
        return exc.partial


@pytest.fixture
def big(packages: Path) -> Path:
    return build_spk(packages / "big.spk", {"package": "big"}, package_tgz=os.urandom(BIG))


# -- a file changed while it is being sent (items 4, 13) ----------------------------------------------


def test_a_file_truncated_during_a_download_closes_the_connection_at_once(run_server, packages, big):
    server = run_server("--packages", str(packages), "--watch", "off", "--no-md5")
    response = start_download(server.port, "/download/big.spk")
    size = int(response.headers["Content-Length"])
    first = response.read(1 << 16)
    cpu_before = cpu_seconds(server.proc.pid)
    started = time.monotonic()
    os.truncate(big, 1 << 20)  # `cp new.spk big.spk`, `rsync --inplace`: the same inode, shorter
    body = first + read_body(response)  # before the fix: no more bytes, no close, until the 120 s channel timeout
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(server.proc.pid) - cpu_before
    assert len(body) < size
    assert elapsed < 5 and cpu < 1.0, (elapsed, cpu)  # before the fix: waitress' loop spun at 100 % CPU
    assert server.json("/health")["status"] == "ok"
    assert "Traceback" not in server.output()
    assert wait_for(lambda: "big.spk" in server.output())  # the operator learns why the download stopped


def test_a_file_rewritten_in_place_during_a_download_is_never_sent_mixed(run_server, packages, big):
    old = big.read_bytes()
    st = big.stat()
    server = run_server("--packages", str(packages), "--watch", "off", "--no-md5")
    response = start_download(server.port, "/download/big.spk")
    first = response.read(1 << 16)
    new = old[:1 << 20] + os.urandom(len(old) - (1 << 20))
    with open(big, "r+b") as fh:  # `cp -p new.spk big.spk` of a same-size rebuild: same inode, size, mtime
        fh.write(new)
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    body = first + read_body(response)
    assert old.startswith(body)  # before the fix: the old file's head, the new file's tail, a "whole" body
    assert len(body) < len(old)


@pytest.mark.parametrize("change", ["replaced", "renamed", "deleted", "linked", "chmod"])
def test_a_file_replaced_renamed_or_deleted_during_a_download_is_sent_whole(run_server, packages, big, change):
    old = big.read_bytes()
    server = run_server("--packages", str(packages), "--watch", "off", "--no-md5")
    response = start_download(server.port, "/download/big.spk")
    first = response.read(1 << 16)
    if change == "replaced":  # atomically, as careful copy tools do: the open file keeps its bytes
        staged = build_spk(packages.parent / "new.spk", {"package": "big"}, package_tgz=b"n" * 1000)
        os.replace(staged, big)
    elif change == "renamed":
        big.rename(packages / "moved.spk")
    elif change == "deleted":
        big.unlink()
    elif change == "linked":
        os.link(big, packages / "backup.spk")
    else:
        big.chmod(0o600)
    assert first + read_body(response) == old  # only its ctime changed: its bytes did not


def test_the_etag_changes_when_a_same_size_rebuild_is_copied_in_with_its_mtime(packages, make_client):
    path = build_spk(packages / "a.spk", {"package": "a"}, package_tgz=b"1" * 5000)
    app, _ = make_client()
    etag = app.get("/download/a.spk").headers["ETag"]
    st = path.stat()
    time.sleep(0.01)
    with open(path, "r+b") as fh:  # `cp -p`: same inode, same size, mtime pinned; only ctime tells
        fh.write(build_spk(packages.parent / "b.spk", {"package": "a"}, package_tgz=b"2" * 5000).read_bytes())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    res = app.get("/download/a.spk", headers={"If-None-Match": etag})
    assert res.status_int == 200 and res.headers["ETag"] != etag
    assert res.body == path.read_bytes()


# -- a FIFO swapped in under an indexed name (item 5) -------------------------------------------------


def unblock(fifo: Path) -> None:
    """Let a reader blocked opening the FIFO go: a writer that opens and closes it (a test failing must not hang)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


def test_a_fifo_under_an_indexed_name_is_404_and_holds_no_worker(run_server, packages):
    path = build_spk(packages / "a.spk", {"package": "a"})
    build_spk(packages / "b.spk", {"package": "b"})
    server = run_server("--packages", str(packages), "--watch", "off", "--no-md5", "--threads", "2")
    path.unlink()
    os.mkfifo(path)  # the index cannot notice: --watch off
    try:
        for method in ("GET", "HEAD") * 3:  # more requests than worker threads
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3)
            conn.request(method, "/download/a.spk")
            assert conn.getresponse().status == 404  # before the fix: open() blocked, the client timed out
            conn.close()
        assert server.get("/download/b.spk")[0] == 200
    finally:
        for _ in range(6):
            unblock(path)


# -- If-Range, Range units (items 6, 9) ----------------------------------------------------------------


def test_if_range_with_an_old_validator_gets_the_whole_new_file(packages, make_client, tmp_path):
    path = build_spk(packages / "a.spk", {"package": "a", "version": "1.0-1"})
    app, index = make_client()
    old = app.get("/download/a.spk")
    etag, last = old.headers["ETag"], old.headers["Last-Modified"]
    app.get("/download/a.spk", headers={"Range": "bytes=10-19", "If-Range": etag}, status=206)
    app.get("/download/a.spk", headers={"Range": "bytes=10-19", "If-Range": last}, status=206)
    newer = build_spk(tmp_path / "new.spk", {"package": "a", "version": "2.0-1"})
    os.utime(newer, (time.time() + 5, time.time() + 5))
    os.replace(newer, path)
    index.scan()
    for if_range in (etag, last, "W/" + etag, "not a date", '"other"'):
        res = app.get("/download/a.spk", headers={"Range": "bytes=10-19", "If-Range": if_range})
        assert res.status_int == 200, if_range  # before the fix: 206 with bytes of the new file
        assert res.body == path.read_bytes() and "Content-Range" not in res.headers
    current = app.get("/download/a.spk").headers["ETag"]
    app.get("/download/a.spk", headers={"Range": "bytes=10-19", "If-Range": "W/" + current}, status=200)
    part = app.get("/download/a.spk", headers={"Range": "bytes=10-19", "If-Range": current}, status=206)
    assert part.body == path.read_bytes()[10:20]


def test_a_range_in_another_unit_is_ignored(packages, make_client):
    path = build_spk(packages / "a.spk", {"package": "a"})
    app, _ = make_client()
    for header in ("items=0-4", "lines=1-2", "none"):
        res = app.get("/download/a.spk", headers={"Range": header})
        assert res.status_int == 200 and res.body == path.read_bytes(), header  # before the fix: 416
    res = app.get("/download/a.spk", headers={"Range": "BYTES=0-4"}, status=206)  # units are case-insensitive
    assert res.body == path.read_bytes()[:5]


# -- file names: control characters, bytes that are not UTF-8 (items 3, 7, 8) ---------------------------


NAMES = {  # the link's path: the file name's bytes
    "caf%E9.spk": b"caf\xe9.spk",
    "a%0Ab.spk": b"a\nb.spk",
    "a%0Db.spk": b"a\rb.spk",
    "caf%C3%A9%20%22q%22.spk": 'café "q".spk'.encode(),
    "sub%FF/t%09ab.spk": b"sub\xff/t\tab.spk",
}


def test_every_file_name_downloads_with_clean_headers(run_server, packages, tmp_path):
    folder = os.fsencode(packages)
    os.mkdir(os.path.join(folder, b"sub\xff"))
    for n, name in enumerate(NAMES.values()):
        staged = build_spk(tmp_path / f"{n}.spk", {"package": f"p{n}"})
        os.rename(staged, os.path.join(folder, name))
    server = run_server("--packages", str(packages), "--watch", "off")
    assert server.json("/health")["packages"] == len(NAMES)
    for link, name in NAMES.items():
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/download/" + link)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, link  # before the fix: 404 (not UTF-8, LF) or 500 (CR)
        assert body == open(os.path.join(folder, name), "rb").read()
        disposition = response.getheader("Content-Disposition")
        assert disposition.isascii() and disposition.isprintable(), disposition
        assert disposition.startswith('attachment; filename="') and "; filename*=UTF-8''" in disposition
        conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/download/" + "caf%C3%A9%20%22q%22.spk")
    disposition = conn.getresponse().getheader("Content-Disposition")
    assert disposition == "attachment; filename=\"caf_ _q_.spk\"; filename*=UTF-8''caf%C3%A9%20%22q%22.spk"
    conn.close()
    for missing in ("caf.spk", "caf%E8.spk", "ab.spk", "a%0A%0Db.spk", "sub/t%09ab.spk", "nope%FF.spk"):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/download/" + missing)
        assert conn.getresponse().status == 404, missing
        conn.close()
    assert "Traceback" not in server.output()


def test_only_the_download_prefix_leads_to_files(run_server, packages, tmp_path):
    build_spk(packages / "x.spk", {"package": "x"})
    server = run_server("--packages", str(packages), "--watch", "off")
    for path in ("/downloa%E9d/x.spk", "/%E9download/x.spk", "/download%E9/x.spk"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            response = http.client.HTTPResponse(sock)
            response.begin()
            assert response.status == 404, path
