"""Hostile clients and file names against a real server (issue 15, items 1-3).

A GET's answer depends on its query string alone; no client can make the server's memory grow past a bound;
a file name that is not UTF-8 (or holds CR/LF) never breaks the answers for the other files.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import pytest
from spkbuilder import build_spk
from stress.httpraw import exchange

DSM7_QUERY = "/?arch=apollolake&build=72806&major=7&minor=2&language=enu"


def raw_request(port: int, method: str, target: str, headers: Dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close"]
    if "Host" not in headers:
        lines.insert(1, f"Host: 127.0.0.1:{port}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def catalog(port: int, target: str = DSM7_QUERY, headers: Optional[Dict[str, str]] = None, body: bytes = b"",
            method: str = "GET") -> Any:
    status, _, answer = exchange(port, raw_request(port, method, target, headers or {}, body))
    assert status == 200, answer
    return json.loads(answer)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


@pytest.fixture
def one_package(packages: Path, run_server: Callable[..., Any]) -> Any:
    build_spk(packages / "demo.spk", {"package": "demo", "os_min_ver": "7.0-40000"})
    return run_server("--packages", str(packages), "--no-md5")  # answers that md5s landing cannot change


# -- 1. a GET's body never counts -----------------------------------------------------------------------------

GET_BODIES = {
    "content-length": ({"Content-Length": "7"}, b"build=1"),
    "form content type": ({"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "7"}, b"build=1"),
    "other content type": ({"Content-Type": "text/plain", "Content-Length": "30"},
                           b"package_update_channel=beta&x="),
    "chunked": ({"Transfer-Encoding": "chunked"}, b"7\r\nbuild=1\r\n0\r\n\r\n"),
    "arch in body": ({"Content-Length": "11"}, b"arch=armada"),
}


@pytest.mark.parametrize("framing", GET_BODIES)
def test_a_get_body_neither_changes_its_answer_nor_poisons_later_ones(one_package: Any, framing: str):
    port = one_package.port
    expected = catalog(port)
    assert [p["package"] for p in expected["packages"]] == ["demo"]
    headers, body = GET_BODIES[framing]
    assert catalog(port, headers=headers, body=body) == expected
    for later in ({}, {"Content-Type": headers.get("Content-Type", "text/plain")}):
        assert catalog(port, headers=later) == expected


def test_a_post_body_still_counts_and_is_not_replayed_to_a_get(one_package: Any):
    """DSM 3-6 POST their parameters: the body decides there (and only there)."""
    port = one_package.port
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    dsm3 = b"arch=apollolake&build=1&language=enu"
    assert catalog(port, "/", {**form, "Content-Length": str(len(dsm3))}, dsm3, method="POST") == []
    assert [p["package"] for p in catalog(port)["packages"]] == ["demo"]


# -- 2. memory stays bounded whatever clients send ------------------------------------------------------------

def test_a_host_that_is_no_plausible_host_gets_the_servers_own_address(one_package: Any):
    port = one_package.port
    own = {catalog(port, headers={"Host": host})["packages"][0]["link"]
           for host in ("h" * 30000, "a b", "x:99999", "[::1]:123456", "evil/path", "..", "a..b", "")}
    assert len(own) == 1 and len(own.pop()) < 100
    for host in ("nas.example.lan:8080", "[::1]:8080", "my_box", "10.0.0.2"):
        assert catalog(port, headers={"Host": host})["packages"][0]["link"].startswith(f"http://{host}/")


def flood(port: int, targets_and_hosts: Any) -> None:
    for target, host in targets_and_hosts:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(raw_request(port, "GET", target, {"Host": host}))
            while sock.recv(1 << 16):
                pass


def test_host_and_language_floods_keep_memory_bounded(packages: Path, run_server: Callable[..., Any]):
    """Distinct 30 KB Host headers and distinct languages: each used to keep its own answer (1.8 GiB)."""
    for n in range(150):
        build_spk(packages / f"p{n}.spk", {"package": f"p{n}", "description": "d" * 200}, icon=False)
    server = run_server("--packages", str(packages))
    port = server.port
    assert len(catalog(port)["packages"]) == 150
    before = rss_kib(server.proc.pid)
    flood(port, ((DSM7_QUERY, f"h{n}-" + "x" * 30000) for n in range(300)))
    flood(port, ((f"{DSM7_QUERY[:-3]}l{n}", f"host{n % 7}.lan") for n in range(600)))
    flood(port, ((DSM7_QUERY, f"n{n}." + "y" * 60 + ".lan") for n in range(300)))
    grown = (rss_kib(server.proc.pid) - before) / 1024
    assert grown < 40, f"RSS grew {grown:.0f} MiB"
    assert len(catalog(port)["packages"]) == 150


# -- 3. file names that are not UTF-8 or hold control characters -----------------------------------------------

HOSTILE_NAMES = (b"caf\xe9.spk", b"new\nline.spk", b"carriage\rreturn.spk", b"\xff\xfe.spk", b"tab\there.spk")


def test_hostile_file_names_never_break_the_other_files(packages: Path, run_server: Callable[..., Any]):
    folder = os.fsencode(packages)
    build_spk(packages / "plain.spk", {"package": "plain"})
    for n, name in enumerate(HOSTILE_NAMES):
        build_spk(os.path.join(folder, name).decode("utf-8", "surrogateescape"), {"package": f"odd{n}"})
    (Path(os.path.join(folder, b"broken\xe9.spk").decode("utf-8", "surrogateescape"))).write_bytes(b"junk")
    server = run_server("--packages", str(packages))
    port = server.port

    answer = catalog(server.port)["packages"]
    links = {p["package"]: p["link"] for p in answer}
    assert set(links) == {"plain", *(f"odd{n}" for n in range(len(HOSTILE_NAMES)))}
    assert links["odd0"] == f"http://127.0.0.1:{port}/download/caf%E9.spk"
    assert links["odd1"].endswith("/new%0Aline.spk") and links["odd2"].endswith("/carriage%0Dreturn.spk")
    assert all(link.isascii() and link.isprintable() for link in links.values())

    files = {p["file"] for p in server.json("/v1/packages")}
    assert {"caf\\xe9.spk", "new\\nline.spk", "\\xff\\xfe.spk", "plain.spk"} <= files
    assert server.json("/v1/packages/caf%5Cxe9.spk")["package"] == "odd0"
    assert server.json("/v1/rejected")[0]["file"] == "broken\\xe9.spk"
    assert server.get("/", headers={"Accept": "text/html"})[0] == 200
    status, _, page = server.get("/?view=files", headers={"Accept": "text/html"})
    assert status == 200 and b"caf\\xe9.spk" in page and b"broken\\xe9.spk" in page
