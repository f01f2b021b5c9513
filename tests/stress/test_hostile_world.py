"""Generators for the classes of issue 15 (round 2): file names made of random bytes, GET bodies in every
framing, and floods of Host headers and NAS profiles with the server's memory sampled from /proc."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from spkbuilder import build_spk

from stress import sized
from stress.httpraw import exchange

pytestmark = pytest.mark.stress

DSM7 = "/?arch=apollolake&build=72806&major=7&minor=2&language=enu"
PLATFORMS = ("apollolake", "geminilake", "armada38x", "rtd1296", "denverton", "x86_64", "broadwellnk", "v1000")


def random_name(rng: random.Random) -> bytes:
    """A file name of random bytes: often not UTF-8, often with control characters; never '/' or NUL."""
    alphabet = [b for b in range(1, 256) if b != ord("/")]
    stem = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
    return (b"_" if stem.startswith(b".") else b"") + stem + rng.choice((b".spk", b".SPK", b".Spk"))


def request(port: int, method: str, target: str, headers: Dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def get_json(port: int, target: str) -> Any:
    status, _, answer = exchange(port, request(port, "GET", target, {}))
    assert status == 200, (target, answer[:200])
    return json.loads(answer)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_file_names_of_random_bytes(tmp_path: Path, run_server: Callable[..., Any], figures: Callable[[str], None]):
    """Every valid package under any name is offered under a link that downloads exactly it; the rest of the
    server (API, page, rejected list) keeps answering."""
    rng = random.Random(15)
    packages = tmp_path / "packages"
    packages.mkdir()
    folder = os.fsencode(packages)
    names: Dict[str, bytes] = {}
    sub = os.path.join(folder, random_name(rng)[:-4])
    os.mkdir(sub)
    for n in range(sized(60, 400)):
        name = os.path.join(sub if n % 5 == 0 else folder, random_name(rng))
        if n % 7 == 0:
            with open(name, "wb") as fh:
                fh.write(b"not a package")
            continue
        package = f"p{n}"
        build_spk(os.fsdecode(name), {"package": package, "arch": "noarch"}, icon=False)
        with open(name, "rb") as fh:
            names[package] = fh.read()
    server = run_server("--packages", str(packages))
    port = server.port
    offered = {p["package"]: p["link"] for p in get_json(port, DSM7)["packages"]}
    assert set(offered) == set(names)
    for package, link in offered.items():
        assert link.isascii() and link.isprintable()
        status, _, body = exchange(port, request(port, "GET", urllib.parse.urlsplit(link).path, {}))
        assert status == 200 and hashlib.md5(body).digest() == hashlib.md5(names[package]).digest(), link
    assert len(get_json(port, "/v1/packages")) == len(names)
    assert len(get_json(port, "/v1/rejected")) == len([n for n in range(sized(60, 400)) if n % 7 == 0])
    for page in ("/", "/?view=files"):
        assert exchange(port, request(port, "GET", page, {"Accept": "text/html"}))[0] == 200
    assert "Traceback" not in server.output()
    figures(f"{len(names)} packages under random byte names, each downloaded whole")


FRAMINGS = ("length", "chunked", "form", "json", "multipart", "length-mismatch")


def get_with_body(rng: random.Random, port: int) -> bytes:
    """The DSM 7 query, with a random body in a random framing that tries to change the answer."""
    body = rng.choice((b"build=1", b"arch=armada370&build=1", b"package_update_channel=beta", b"major=5",
                       b"language=" + bytes(rng.randrange(256) for _ in range(20)), os.urandom(64)))
    framing = rng.choice(FRAMINGS)
    if framing == "chunked":
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        return request(port, "GET", DSM7, {"Transfer-Encoding": "chunked"}, chunked)
    kinds = {"form": "application/x-www-form-urlencoded", "json": "application/json",
             "multipart": "multipart/form-data; boundary=x"}
    headers = {"Content-Length": str(len(body))}
    if framing in kinds:
        headers["Content-Type"] = kinds[framing]
    if framing == "length-mismatch":
        headers["Content-Length"] = str(len(body) // 2)
    return request(port, "GET", DSM7, headers, body)


def test_get_bodies_in_every_framing(tmp_path: Path, run_server: Callable[..., Any], figures: Callable[[str], None]):
    """A GET's answer is its query's answer, whatever body came with it or before it."""
    packages = tmp_path / "packages"
    packages.mkdir()
    for n in range(10):
        build_spk(packages / f"p{n}.spk", {"package": f"p{n}"})
    build_spk(packages / "beta.spk", {"package": "beta", "beta": "yes"})
    # --no-md5: answers that change only when the background md5s land would make the comparisons race
    port = run_server("--packages", str(packages), "--no-md5").port
    expected = get_json(port, DSM7)
    rng = random.Random(2)
    count = sized(300, 3000)
    for _ in range(count):
        status, _, body = exchange(port, get_with_body(rng, port))
        assert status is None or status == 400 or json.loads(body) == expected
        assert get_json(port, DSM7) == expected
    figures(f"{count} GETs with bodies, each followed by a clean GET: all got the query's answer")


def flood(port: int, make: Callable[[int], Tuple[str, str]], count: int, workers: int = 4) -> None:
    """`count` requests from `workers` threads; make(n) gives (target, Host)."""
    def work(start: int) -> None:
        for n in range(start, count, workers):
            target, host = make(n)
            with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
                sock.sendall(request(port, "GET", target, {"Host": host}).replace(
                    f"Host: 127.0.0.1:{port}\r\n".encode(), b"", 1))
                while sock.recv(1 << 16):
                    pass

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)


def test_floods_keep_memory_bounded(tmp_path: Path, run_server: Callable[..., Any], figures: Callable[[str], None]):
    """30 KB Host headers, distinct hosts (each a distinct answer: the memo's byte bound), distinct languages,
    random NAS profiles: peak RSS stays a few tens of MiB."""
    packages = tmp_path / "packages"
    packages.mkdir()
    for n in range(500):
        build_spk(packages / f"p{n}.spk", {"package": f"p{n}", "arch": PLATFORMS[n % len(PLATFORMS)],
                                           "description": "d" * 100}, icon=False)
    server = run_server("--packages", str(packages))
    port, pid = server.port, server.proc.pid
    get_json(port, DSM7)
    start = rss_kib(pid)
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], rss_kib(pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    rng = random.Random(3)
    profiles = [(f"/?arch={rng.choice(PLATFORMS)}&build={rng.randint(1, 99999)}&language={rng.randrange(10**6)}",
                 "nas.lan") for _ in range(sized(2000, 50000))]
    floods: List[Tuple[str, Callable[[int], Tuple[str, str]], int]] = [
        ("30 KB host", lambda n: (DSM7, f"h{n}." + "x" * 30000), sized(1100, 3000)),
        ("distinct plausible host", lambda n: (DSM7, f"nas{n}." + "y" * 60 + ".lan"), sized(1000, 5000)),
        ("language", lambda n: (f"{DSM7[:-3]}l{n}", "nas.lan"), sized(1000, 5000)),
        ("profile", lambda n: profiles[n], len(profiles)),
    ]
    try:
        for name, make, count in floods:
            started = time.monotonic()
            flood(port, make, count)
            figures(f"{name} flood: {count} requests in {time.monotonic() - started:.1f} s, "
                    f"peak RSS {peak[0] / 1024:.1f} MiB (start {start / 1024:.1f} MiB)")
    finally:
        done.set()
        sampler.join()
    assert len(get_json(port, DSM7)["packages"]) > 0
    assert peak[0] - start < 40 * 1024, f"peak RSS {peak[0] / 1024:.0f} MiB from {start / 1024:.0f} MiB"
