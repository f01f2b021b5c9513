"""contrib/nginx.conf, run by a real nginx in front of a real spklite (issue 14): the catalog over TLS, downloads
that spklite checks and nginx sends (X-Accel-Redirect: Range, If-Range, HEAD), files outside the index refused,
and X-Forwarded-* believed only from nginx.

nginx connects to spklite from 127.0.0.2 (proxy_bind), the one address spklite trusts; the test's own direct
requests come from 127.0.0.1, so "from nginx" and "from anyone else" are two real source addresses.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Tuple

import pytest
from conftest import TESTS, Running, free_port, wait_for
from nginx_process import NGINX, Nginx
from spkbuilder import build_broken, build_spk

SHIPPED = TESTS.parent / "contrib" / "nginx.conf"
OPENSSL = shutil.which("openssl")
PROXY_ADDRESS = "127.0.0.2"  # where nginx connects from (proxy_bind): spklite's trusted proxy
HOST = "spk.example.test"  # the name clients use (never resolved: sent as Host over a loopback connection)
MB = 1 << 20
BIG = 100 * MB

pytestmark = [
    pytest.mark.skipif(NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx; .ci/run does)"),
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed: no certificate for nginx's TLS"),
]


def can_bind(address: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def shipped_config(spklite_port: int, port: int, cert: Path, key: Path, packages: Path) -> Tuple[str, str]:
    """contrib/nginx.conf with its CHANGE values set for this test, and nginx connecting from PROXY_ADDRESS;
    and the internal location's prefix (what spklite's --accel-redirect must say). Each replaced line must be
    in the file once: a changed file fails here, naming the line, instead of testing something else."""
    text = SHIPPED.read_text()
    swaps = {
        "server 127.0.0.1:8080;": f"server 127.0.0.1:{spklite_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
        "ssl_certificate /etc/ssl/certs/spk.example.com.pem;": f"ssl_certificate {cert};",
        "ssl_certificate_key /etc/ssl/private/spk.example.com.key;": f"ssl_certificate_key {key};",
        "alias /srv/spklite/packages/;": f"alias {packages}/;",
        "proxy_pass http://spklite;": f"proxy_pass http://spklite;\n        proxy_bind {PROXY_ADDRESS};",
    }
    for old, new in swaps.items():
        assert text.count(old) == 1, f"contrib/nginx.conf: expected the line {old!r} once"
        text = text.replace(old, new)
    internal = re.search(r"location (/\S+)/ \{\s*internal;", text)
    assert internal, "contrib/nginx.conf: no internal location"
    return text, internal.group(1)


class Front:
    """spklite behind nginx, and a TLS client that trusts the test's certificate."""

    def __init__(self, spklite: Running, nginx: Nginx, cert: Path):
        self.spklite, self.nginx = spklite, nginx
        self.tls = ssl.create_default_context(cafile=str(cert))

    def request(self, path: str, method: str = "GET", headers: Optional[Dict[str, str]] = None,
                read: bool = True) -> Tuple[int, http.client.HTTPMessage, bytes]:
        """A request to nginx (over TLS, Host HOST); the body only when `read`."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.nginx.port, timeout=30, context=self.tls)
        try:
            conn.request(method, path, headers={"Host": HOST, **(headers or {})})
            response = conn.getresponse()
            return response.status, response.headers, response.read() if read else b""
        finally:
            conn.close()

    def direct(self, path: str, headers: Dict[str, str]) -> Tuple[int, bytes]:
        """A request straight to spklite from 127.0.0.1 (not the trusted proxy)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.spklite.port, timeout=30)
        try:
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture
def behind_nginx(tmp_path: Path, run_server: Callable[..., Running]) -> Iterator[Callable[[Path], Front]]:
    """behind_nginx(packages) -> spklite serving `packages`, behind contrib/nginx.conf."""
    if not can_bind(PROXY_ADDRESS):
        pytest.skip(f"cannot bind {PROXY_ADDRESS}: nginx could not connect from an address of its own")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([str(OPENSSL), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={HOST}", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    started: list = []

    def start(packages: Path) -> Front:
        port = free_port()
        # spklite first: the server block names its port. Its --accel-redirect is the shipped internal location.
        _, internal = shipped_config(0, port, cert, key, packages)
        spklite = run_server("--packages", str(packages), "--trusted-proxy", PROXY_ADDRESS,
                             "--accel-redirect", internal)
        block, _ = shipped_config(spklite.port, port, cert, key, packages)
        nginx = Nginx(tmp_path / "nginx", block, port)
        started.append(nginx)
        return Front(spklite, nginx, cert)

    yield start
    for nginx in started:
        nginx.stop()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_catalog_and_downloads_through_nginx(tmp_path: Path, behind_nginx: Callable[[Path], Front]) -> None:
    packages = tmp_path / "packages"
    (packages / "sub dir").mkdir(parents=True)
    big = build_spk(packages / "big.spk", {"package": "big", "displayname": "Big"}, package_tgz=os.urandom(BIG))
    build_spk(packages / "sub dir" / "small 100%.spk", {"package": "small"})
    build_spk(packages / "odd?#+;.spk", {"package": "odd"})  # URL delimiters in the name
    build_spk(packages / os.fsdecode(b"caf\xe9.spk"), {"package": "latin"})  # not UTF-8
    build_broken(packages / "broken.spk", "gzip")  # rejected: on disk, not in the index
    (packages / "notes.txt").write_text("not a package")
    front = behind_nginx(packages)
    data = big.read_bytes()

    # The catalog, through nginx: links name nginx's address (https, its host and port), from the proxy headers.
    status, headers, body = front.request("/?arch=x86_64&build=42661&major=7&minor=1")
    assert status == 200, body
    links = {e["package"]: e["link"] for e in json.loads(body)["packages"]}
    base = f"https://{HOST}:{front.nginx.port}/download/"
    assert links == {"big": base + "big.spk", "small": base + "sub%20dir/small%20100%25.spk",
                     "odd": base + "odd%3F%23%2B%3B.spk", "latin": base + "caf%E9.spk"}
    # gzip passes through nginx untouched.
    status, headers, body = front.request("/?arch=x86_64&build=42661", headers={"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip" and json.loads(gzip.decompress(body))["packages"]

    # The whole 100 MB file, sent by nginx: spklite answered with headers only.
    status, headers, body = front.request("/download/big.spk")
    assert (status, len(body), digest(body)) == (200, len(data), digest(data))
    assert headers["Content-Disposition"].startswith('attachment; filename="big.spk"')
    assert headers["Content-Type"] == "application/octet-stream" and "X-Accel-Redirect" not in headers
    assert wait_for(lambda: re.search(r'"GET /download/big\.spk" 200 0 ', front.spklite.output())), \
        front.spklite.output()
    etag = headers["ETag"]

    # Ranges and If-Range: nginx's, against the file's bytes.
    for first, last in ((0, 0), (50 * MB - 7, 51 * MB), (len(data) - MB, len(data) - 1)):
        status, headers, body = front.request("/download/big.spk", headers={"Range": f"bytes={first}-{last}"})
        assert (status, headers["Content-Range"]) == (206, f"bytes {first}-{last}/{len(data)}")
        assert body == data[first:last + 1]
    status, _, body = front.request("/download/big.spk", headers={"Range": "bytes=-1000", "If-Range": etag})
    assert (status, body) == (206, data[-1000:])
    status, headers, _ = front.request("/download/big.spk", read=False,
                                       headers={"Range": "bytes=-1000", "If-Range": '"another-version"'})
    assert (status, headers["Content-Length"]) == (200, str(len(data)))  # another version: the whole file
    status, _, body = front.request("/download/big.spk", headers={"If-None-Match": etag})
    assert (status, body) == (304, b"")
    status, headers, body = front.request("/download/big.spk", method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, str(len(data)), b"")
    for package, name in (("small", "sub dir/small 100%.spk"), ("odd", "odd?#+;.spk"), ("latin", "caf\udce9.spk")):
        status, _, body = front.request(links[package].split(str(front.nginx.port), 1)[1])
        assert (status, body) == (200, (packages / name).read_bytes()), name

    # Outside the index: refused by spklite; the internal location is not a way around it.
    for path in ("/download/broken.spk", "/download/notes.txt", "/download/missing.spk", "/download/sub%20dir"):
        status, _, body = front.request(path)
        assert status == 404, (path, body)
    status, _, _ = front.request("/_spklite_files/big.spk", read=False)
    assert status == 404


def test_forwarded_headers_are_believed_only_from_nginx(tmp_path: Path, behind_nginx: Callable[[Path], Front]
                                                       ) -> None:
    packages = tmp_path / "packages"
    packages.mkdir()
    build_spk(packages / "demo.spk")
    front = behind_nginx(packages)
    catalog = "/?arch=x86_64&build=42661&major=7&minor=1"
    forged = {"X-Forwarded-Host": "forged.example", "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443",
              "X-Forwarded-For": "203.0.113.9"}

    # From nginx (127.0.0.2): nginx's own headers count, a client's forged ones do not get through.
    status, _, body = front.request(catalog, headers=forged)
    assert status == 200
    assert json.loads(body)["packages"][0]["link"] == f"https://{HOST}:{front.nginx.port}/download/demo.spk"

    # Straight to spklite from 127.0.0.1: the same headers are ignored.
    status, body = front.direct(catalog, forged)
    assert status == 200
    assert json.loads(body)["packages"][0]["link"] == f"http://127.0.0.1:{front.spklite.port}/download/demo.spk"

    # The client address spklite logs: the one nginx saw (not nginx's own), never the forged one. (The log
    # thread writes the lines a moment after the answers: seen once on CI with the second line not yet there.)
    logged = wait_for(lambda: len(found := re.findall(r'(\S+) "GET /\?arch', front.spklite.output())) >= 2 and found)
    assert logged == ["127.0.0.1", "127.0.0.1"]
