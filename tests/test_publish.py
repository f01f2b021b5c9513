"""Publishing (POST /packages, DELETE /packages/<file>) against a real server: spksrc's request, auth, limits,
disconnects, concurrency, kill -9."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from conftest import wait_for
from spkbuilder import build_spk
from stress.httpraw import build, exchange

from spklite import publish

KEY, ENTRY = publish.new_key("ci")
NAS_7 = "/?arch=x86_64&build=42962&major=7&minor=2&unique=synology_x86_64_920%2B&package_update_channel=stable"


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    packages = tmp_path / "packages"
    packages.mkdir()
    return packages


@pytest.fixture
def publishing(folder: Path, tmp_path: Path, run_server: Callable[..., Any]) -> Callable[..., Any]:
    """publishing(*flags) -> a server with the key configured; its waitress temp files go to tmp_path/tmp."""
    (tmp_path / "tmp").mkdir()

    def start(*flags: str) -> Any:
        return run_server("--packages", str(folder), "--publish-key", ENTRY, *flags,
                          env={"TMPDIR": str(tmp_path / "tmp")})

    return start


def upload(port: int, data: bytes, key: Optional[str] = KEY, target: str = "/packages",
           headers: Optional[Dict[str, str]] = None) -> Tuple[Optional[int], Dict[str, str], Any]:
    """curl -u KEY: --data-binary @file, over a raw socket: (status, headers, JSON body or None)."""
    sent = {"Authorization": basic(key)} if key is not None else {}
    sent.update(headers or {})
    status, answer_headers, body = exchange(port, build("POST", target, sent, data))
    return status, answer_headers, json.loads(body) if body else None


def published(folder: Path) -> List[str]:
    """Every file in the publish folder, hidden ones (temporary files) too."""
    return sorted(os.listdir(folder / "published")) if (folder / "published").is_dir() else []


def offered(server: Any) -> List[str]:
    return [p["package"] for p in server.json(NAS_7)["packages"]]


def spk_bytes(tmp_path: Path, name: str = "alpha", version: str = "1.0-1", **options: Any) -> bytes:
    path = tmp_path / f"{name}-{version}.spk"
    build_spk(path, {"package": name, "version": version, "arch": "x86_64"}, **options)
    return path.read_bytes()


# spksrc #####################################################################################################


def httpie_request(port: int, key: str, data: bytes) -> bytes:
    """The request spksrc's publish recipe (mk/spksrc.spk/publish.mk) sends:

        http --verify=no --ignore-stdin --auth $(PUBLISH_API_KEY): POST $(PUBLISH_URL)/packages @$(SPK_FILE_NAME)

    HTTPie (python-requests underneath): the file is the raw body, Content-Length from its size, no
    Content-Type (mimetypes knows no .spk), requests' default headers, Basic auth with the key as the user
    name and an empty password. It prints the answer and counts only a 201; its log keeps the lines that
    start with {"package": or {"message":.
    """
    head = (
        "POST /packages HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: HTTPie/3.2.2\r\n"
        "Accept-Encoding: gzip, deflate\r\n"
        "Accept: */*\r\n"
        "Connection: keep-alive\r\n"
        f"Content-Length: {len(data)}\r\n"
        f"Authorization: {basic(key)}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + data


def test_spksrc_publish_request_is_answered_like_spkrepo(publishing: Callable[..., Any], folder: Path,
                                                          tmp_path: Path) -> None:
    server = publishing()
    data = spk_bytes(tmp_path)
    started = time.monotonic()
    status, headers, body = exchange(server.port, httpie_request(server.port, KEY, data))
    assert status == 201, body
    assert body.startswith(b'{"package":')  # what spksrc's status log keeps
    answer = json.loads(body)
    assert answer["file"] == "published/alpha_x86_64_1.0-1.spk"
    assert (answer["package"], answer["version"], answer["firmware"], answer["architectures"]) == (
        "alpha", "1.0-1", "7.0-40000", ["x86_64"])
    assert answer["size"] == len(data) and answer["md5"] == hashlib.md5(data).hexdigest()
    # the same object /v1/packages/<file> gives, plus spkrepo's firmware and architectures
    assert server.json("/v1/packages/published/alpha_x86_64_1.0-1.spk") == {
        k: v for k, v in answer.items() if k not in ("firmware", "architectures")}
    assert "alpha" in offered(server) and time.monotonic() - started < 1.0
    assert server.get("/download/published/alpha_x86_64_1.0-1.spk")[2] == data
    assert wait_for(lambda: "published published/alpha_x86_64_1.0-1.spk (key ci)" in server.output())
    assert KEY not in server.output()  # the log says which key, never the key

    status, _, body = exchange(server.port, httpie_request(server.port, KEY, data))
    assert status == 409 and body.startswith(b'{"message":')
    assert published(folder) == ["alpha_x86_64_1.0-1.spk"]

    status, _, body = exchange(server.port, httpie_request(server.port, KEY, b"not an spk" * 1000))
    assert status == 422 and json.loads(body)["reasons"] == ["not a tar archive"]
    assert published(folder) == ["alpha_x86_64_1.0-1.spk"]  # nothing written, no temporary file left


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_data_binary_upload(publishing: Callable[..., Any], folder: Path, tmp_path: Path) -> None:
    """The README's command, as it is (curl adds a form Content-Type and, above 1 MiB, Expect: 100-continue)."""
    server = publishing()
    spk = tmp_path / "big.spk"
    build_spk(spk, {"package": "big", "arch": "noarch"}, package_tgz=os.urandom(3 << 20))
    done = subprocess.run(["curl", "-sS", "--max-time", "20", "-u", f"{KEY}:", "--data-binary", f"@{spk}",
                           f"{server.url}/packages"], capture_output=True, timeout=30)
    answer = json.loads(done.stdout)
    assert answer["file"] == "published/big_noarch_1.0-1.spk" and answer["size"] == spk.stat().st_size
    assert (folder / "published" / "big_noarch_1.0-1.spk").read_bytes() == spk.read_bytes()


def test_broken_and_strict_uploads_get_422_with_reasons(publishing: Callable[..., Any], folder: Path,
                                                        tmp_path: Path) -> None:
    server = publishing("--publish-strict")
    status, _, body = upload(server.port, spk_bytes(tmp_path, extra_members={"INFO": b'package="x"\n'}))
    assert status == 422 and body["reasons"] and "version" in body["message"]
    # a warning (`spklite check` says it, the index would serve it) is a refusal with publish.strict
    status, _, body = upload(server.port, spk_bytes(tmp_path, "warned", icon=False))
    assert status == 422 and body["reasons"] == [] and body["warnings"], body
    assert published(folder) == []


# Auth #######################################################################################################


@pytest.mark.parametrize("headers, target", [
    ({}, "/packages"),  # no key
    ({"Authorization": basic("not-the-key")}, "/packages"),  # wrong key
    ({"Authorization": basic(KEY[:-1])}, "/packages"),  # nearly the key
    ({"Authorization": basic("", KEY)}, "/packages"),  # the key as the password
    ({"X-Api-Key": KEY}, "/packages"),  # the key in a header of its own
    ({"Authorization": f"Bearer {KEY}"}, "/packages"),  # as a bearer token
    ({}, f"/packages?api_key={KEY}"),  # in the query
])
def test_missing_or_misplaced_key_is_401_with_a_challenge(publishing: Callable[..., Any], folder: Path,
                                                          tmp_path: Path, headers: Dict[str, str],
                                                          target: str) -> None:
    server = publishing()
    status, answer_headers, body = upload(server.port, spk_bytes(tmp_path), key=None, target=target,
                                          headers=headers)
    assert status == 401 and answer_headers["www-authenticate"].startswith("Basic realm=")
    assert "API key" in body["message"]
    status, answer_headers, _ = exchange(server.port, build("DELETE", "/packages/x.spk", headers))
    assert status == 401 and "www-authenticate" in answer_headers
    assert published(folder) == []


def test_without_keys_there_is_no_upload_route(folder: Path, tmp_path: Path, run_server: Callable[..., Any]) -> None:
    server = run_server("--packages", str(folder))
    assert upload(server.port, spk_bytes(tmp_path))[0] == 404
    assert exchange(server.port, build("DELETE", "/packages/x.spk", {"Authorization": basic(KEY)}))[0] == 404
    assert not (folder / "published").exists()


def test_keys_are_stored_as_salted_hashes_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    key, entry = publish.new_key("ci")
    other_key, other = publish.new_key("ci")
    name, salt, digest = entry.split(":")
    assert key not in entry and len(salt) == 32 and len(digest) == 64 and salt != other.split(":")[1]
    compared: List[Tuple[str, str]] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    assert publish.key_name([entry, other], key) == "ci"
    assert publish.key_name([entry, other], "wrong") is None
    # every entry is compared, in constant time, found or not: how long it takes tells nothing
    assert len(compared) == 4


# Limits, disconnects ########################################################################################


def temp_bytes(pid: int, tmp: Path) -> int:
    """Bytes of the files (open or not: waitress' are unlinked) the server holds in its temp folder."""
    total = sum(p.stat().st_size for p in tmp.iterdir())
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(tmp)):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            pass
    return total


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) << 10 for line in status if line.startswith("VmRSS:"))


def stream_body(port: int, head: bytes, chunks: Callable[[int], bytes], most: int) -> Tuple[Optional[int], int]:
    """Send `head`, then chunks(n) (what follows the first n bytes of the body) until the server answers or
    closes, or `most` bytes: (status, bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        deadline = time.monotonic() + 30
        answer = b""
        while time.monotonic() < deadline and sent < most:
            try:
                answer += sock.recv(65536)
                break  # the server answered (or closed: b"")
            except BlockingIOError:
                pass
            try:
                sent += sock.send(chunks(sent))
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
        sock.settimeout(5)
        try:
            while not answer.endswith(b"}") and time.monotonic() < deadline:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except OSError:
            pass
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
    return status, sent


def test_a_2gb_body_is_refused_before_it_is_read(publishing: Callable[..., Any], folder: Path,
                                                 tmp_path: Path) -> None:
    server = publishing()  # publish.max-size: 1 GiB
    pid, before = server.proc.pid, rss(server.proc.pid)
    head = build("POST", "/packages", {"Authorization": basic(KEY), "Content-Length": str(2 << 30)})
    block = os.urandom(1 << 16)
    started = time.monotonic()
    status, sent = stream_body(server.port, head, lambda _: block, 64 << 20)
    assert status == 413 and time.monotonic() - started < 5
    assert temp_bytes(pid, tmp_path / "tmp") == 0 and rss(pid) - before < 8 << 20, (sent, rss(pid) - before)
    assert published(folder) == [] and server.json("/health")["status"] == "ok"


def chunked_head() -> bytes:
    """An upload's head without a length (httpraw.build would add Content-Length: 0)."""
    return build("POST", "/packages", {"Authorization": basic(KEY), "Transfer-Encoding": "chunked"}).replace(
        b"Content-Length: 0\r\n", b"")


def test_a_chunked_body_over_the_limit_is_cut_at_the_limit(publishing: Callable[..., Any], folder: Path,
                                                           tmp_path: Path) -> None:
    """No length to refuse up front (chunked, claiming nothing): read up to publish.max-size, then 413; the
    buffer is gone with the connection."""
    server = publishing("--publish-max-size", "4MiB")
    pid, before = server.proc.pid, rss(server.proc.pid)
    head = chunked_head()
    chunk = b"10000\r\n" + os.urandom(1 << 16) + b"\r\n"
    peak: List[int] = [0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], temp_bytes(pid, tmp_path / "tmp"))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        status, sent = stream_body(server.port, head, lambda n: chunk[n % len(chunk):], 2 << 30)
    finally:
        stop.set()
        watcher.join()
    assert status == 413 and sent < 64 << 20, sent
    assert peak[0] <= (4 << 20) + (1 << 20), peak[0]  # waitress' buffer stops at the limit
    assert wait_for(lambda: temp_bytes(pid, tmp_path / "tmp") == 0, 5)
    assert rss(pid) - before < 8 << 20 and published(folder) == []


def test_a_disconnect_mid_upload_leaves_no_file(publishing: Callable[..., Any], folder: Path,
                                                tmp_path: Path) -> None:
    server = publishing()
    data = spk_bytes(tmp_path, package_tgz=os.urandom(2 << 20))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(build("POST", "/packages", {"Authorization": basic(KEY)}, data)[: len(data) // 2])
        assert wait_for(lambda: temp_bytes(server.proc.pid, tmp_path / "tmp") > 0, 5)  # being received
    assert wait_for(lambda: temp_bytes(server.proc.pid, tmp_path / "tmp") == 0, 5)
    assert published(folder) == [] and "alpha" not in offered(server)
    assert upload(server.port, data)[0] == 201  # and the next one lands
    assert published(folder) == ["alpha_x86_64_1.0-1.spk"]


# Concurrency, overwrite, delete #############################################################################


def test_concurrent_uploads_all_land_and_one_file_lands_once(publishing: Callable[..., Any], folder: Path,
                                                              tmp_path: Path) -> None:
    server = publishing()
    files = [spk_bytes(tmp_path, f"pkg{n}", package_tgz=os.urandom(256 << 10)) for n in range(8)]
    results: List[Any] = [None] * 8

    def send(n: int, data: bytes) -> None:
        results[n] = upload(server.port, data)

    threads = [threading.Thread(target=send, args=(n, data)) for n, data in enumerate(files)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r[0] for r in results] == [201] * 8
    for data, (_, _, answer) in zip(files, results):
        status, _, served = server.get("/download/" + answer["file"])
        assert served == data
    assert sorted(offered(server)) == sorted(f"pkg{n}" for n in range(8))

    same = spk_bytes(tmp_path, "same")
    threads = [threading.Thread(target=send, args=(n, same)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r[0] for r in results) == [201] + [409] * 7
    assert published(folder) == sorted([f"pkg{n}_x86_64_1.0-1.spk" for n in range(8)] + ["same_x86_64_1.0-1.spk"])


def test_overwrite_only_when_allowed(publishing: Callable[..., Any], folder: Path, tmp_path: Path,
                                     run_server: Callable[..., Any]) -> None:
    server = publishing()
    first, second = spk_bytes(tmp_path), spk_bytes(tmp_path, package_tgz=b"another build")
    assert upload(server.port, first)[0] == 201
    assert upload(server.port, second, target="/packages?overwrite=1")[0] == 403
    server.stop()
    server = publishing("--publish-overwrite")
    status, _, answer = upload(server.port, second, target="/packages?overwrite=1")
    assert status == 201 and answer["md5"] == hashlib.md5(second).hexdigest()
    assert server.get("/download/" + answer["file"])[2] == second
    # a user's own file with the same package, version and arch is never replaced
    build_spk(folder / "mine.spk", {"package": "beta", "version": "2.0-1", "arch": "x86_64"})
    assert wait_for(lambda: "beta" in offered(server))
    status, _, answer = upload(server.port, spk_bytes(tmp_path, "beta", "2.0-1"), target="/packages?overwrite=1")
    assert status == 409 and answer["files"] == ["mine.spk"]


def test_delete_removes_only_published_files(publishing: Callable[..., Any], folder: Path, tmp_path: Path) -> None:
    build_spk(folder / "mine.spk", {"package": "mine", "arch": "x86_64"})
    (folder / "published").mkdir()
    build_spk(folder / "published" / "old.spk", {"package": "old", "arch": "x86_64"})  # put there by hand
    server = publishing()
    assert upload(server.port, spk_bytes(tmp_path))[0] == 201
    auth = {"Authorization": basic(KEY)}
    for name in ("../mine.spk", "..%2Fmine.spk", "mine.spk", "/mine.spk", "published/../mine.spk", ".hidden.spk",
                 "nothing.spk"):
        status, _, _ = exchange(server.port, build("DELETE", "/packages/" + name, auth))
        assert status == 404, name
    assert (folder / "mine.spk").exists() and "mine" in offered(server)
    status, _, body = exchange(server.port, build("DELETE", "/packages/alpha_x86_64_1.0-1.spk", auth))
    assert status == 200 and json.loads(body)["file"] == "published/alpha_x86_64_1.0-1.spk"
    status, _, _ = exchange(server.port, build("DELETE", "/packages/published/old.spk", auth))  # its /v1 name
    assert status == 200
    assert published(folder) == [] and sorted(offered(server)) == ["mine"]


# Crashes ####################################################################################################


def test_kill_9_during_uploads_leaves_no_partial_file(publishing: Callable[..., Any], folder: Path,
                                                      tmp_path: Path) -> None:
    """Killed at moments across an upload's life (receiving, copying, checking, landing): after a restart,
    every published file is whole and served, and no temporary file is left."""
    data = spk_bytes(tmp_path, package_tgz=os.urandom(24 << 20))
    server = publishing()
    started = time.monotonic()
    assert upload(server.port, data)[0] == 201
    took = time.monotonic() - started  # the kills below fall across an upload of this length
    server.stop()
    seen = []
    # 0 and 0.02: before the landing even when this first upload was slow (a loaded machine, a cold cache)
    for fraction in (0, 0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 1.5):
        for name in published(folder):
            (folder / "published" / name).unlink()
        server = publishing()
        sender = threading.Thread(target=_try, args=(upload, server.port, data))
        sender.start()
        time.sleep(took * fraction)
        server.stop(signal.SIGKILL)
        sender.join(30)
        seen.append(tuple(n.startswith(".") for n in published(folder)))  # (True,): killed mid-copy
        server = publishing()
        for name in published(folder):
            assert not name.startswith("."), name  # the temporary file of the killed upload is gone
            assert (folder / "published" / name).read_bytes() == data
            assert server.get("/download/published/" + name)[2] == data
        assert offered(server) == (["alpha"] if published(folder) else [])
        server.stop()
    assert () in seen and (False,) in seen  # some before, some after the landing


def _try(work: Callable[..., Any], *args: Any) -> None:
    try:
        work(*args)
    except (OSError, urllib.error.URLError):
        pass


# The key command, settings ##################################################################################


def test_key_add_prints_a_key_once_and_the_entry_that_enables_it(folder: Path, tmp_path: Path,
                                                                  run_server: Callable[..., Any]) -> None:
    done = subprocess.run([sys.executable, "-m", "spklite", "key", "add", "build-bot"], capture_output=True,
                          text=True, timeout=30, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    key = done.stdout.split("\n\n")[1].strip()
    entry = next(word for word in done.stdout.split() if word.startswith("build-bot:"))
    assert key not in entry and not (tmp_path / "spklite").exists()  # nothing written anywhere
    # the environment variable takes entries separated by spaces
    server = run_server("--packages", str(folder), env={"SPKLITE_PUBLISH_KEYS": f"{ENTRY} {entry}"})
    assert upload(server.port, spk_bytes(tmp_path), key=key)[0] == 201
    assert upload(server.port, spk_bytes(tmp_path, "other"), key=KEY)[0] == 201
    bad = subprocess.run([sys.executable, "-m", "spklite", "key", "add", "no spaces"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "key name" in bad.stderr and not bad.stdout


@pytest.mark.parametrize("setting, value", [
    ("--publish-folder", "../outside"),
    ("--publish-folder", "/"),
    ("--publish-folder", "."),
    ("--download", "/packages"),
])
def test_a_publish_folder_outside_the_packages_folder_is_refused(folder: Path, tmp_path: Path, setting: str,
                                                                  value: str) -> None:
    done = subprocess.run([sys.executable, "-m", "spklite", "--home", str(tmp_path / "home"), "--packages",
                           str(folder), "--publish-key", ENTRY, setting, value, "--port", "1"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "not allowed" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_bad_key_entry_is_refused_with_the_format(folder: Path, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "spklite", "--home", str(tmp_path / "home"), "--publish-key",
                           "ci:the-plain-key", "config"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "publish.keys" in done.stderr and "NAME:SALT:HASH" in done.stderr


def test_no_upload_lands_where_the_packages_folder_is_missing(publishing: Callable[..., Any], folder: Path,
                                                              tmp_path: Path) -> None:
    """An unmounted disk: its mount point stays empty (no packages/published made on the disk beneath)."""
    server = publishing()
    folder.rmdir()
    status, _, answer = upload(server.port, spk_bytes(tmp_path))
    assert status == 507 and "not available" in answer["message"] and not folder.exists()


def test_a_chunked_upload_lands(publishing: Callable[..., Any], folder: Path, tmp_path: Path) -> None:
    """CI tools that stream (curl -T -, HTTP clients without a length) send chunks."""
    server = publishing()
    data = spk_bytes(tmp_path, package_tgz=os.urandom(1 << 20))
    body = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 70000]), data[i:i + 70000]) for i in range(0, len(data), 70000))
    head = chunked_head()
    status, _, answer = exchange(server.port, head + body + b"0\r\n\r\n")
    assert status == 201 and json.loads(answer)["size"] == len(data)
    assert (folder / "published" / "alpha_x86_64_1.0-1.spk").read_bytes() == data
