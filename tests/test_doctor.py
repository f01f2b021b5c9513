"""`spklite doctor [URL]`: a source checked as DSM 7, 6 and 5 units see it. A healthy spklite passes; every kind of
defect is shown by a tiny stdlib server on 127.0.0.1 serving a crafted catalog (spklite cannot be made to lie)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import TESTS, free_port, wait_for
from loopback import LoopbackServer, QuietHandler
from spkbuilder import build_spk

from spklite.doctor import own_url

DOCTOR_TIMEOUT = 60  # seconds a doctor run may take in these tests


def doctor(*args: str, env: Optional[Dict[str, str]] = None) -> Tuple[int, str]:
    """Run `python -m spklite doctor ARGS` -> (exit status, stdout + stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "spklite", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=DOCTOR_TIMEOUT,
        cwd=str(TESTS.parent),
        env={**os.environ, **(env or {})},
    )
    return done.returncode, done.stdout + done.stderr


def lines_with(output: str, text: str) -> List[str]:
    return [line for line in output.splitlines() if text in line]


def verdict_of(output: str, text: str) -> str:
    """The verdict (OK, WARN, ERROR) of the check group whose line, or one of whose problems, says `text`."""
    verdict = ""
    for line in output.splitlines():
        if not line.startswith(" "):
            verdict = line.split()[0]
        if text in line:
            return verdict
    raise AssertionError(f"{text!r} not in:\n{output}")


# A real spklite ##############################################################################################


@pytest.fixture
def healthy(packages: Path, run_server: Callable[..., Any]) -> Any:
    """spklite serving packages for DSM 7, 6 and 5 units, with icons, screenshots and a met dependency,
    once every md5 is published."""
    build_spk(packages / "web.spk", {"package": "web", "version": "2.0-1", "arch": "noarch",
                                     "install_dep_packages": "base>=1.0"}, icon_256=True, screenshots=2)
    build_spk(packages / "base.spk", {"package": "base", "version": "1.2-3", "arch": "x86_64 armv8"})
    build_spk(packages / "web6.spk", {"package": "web", "version": "1.0-1", "arch": "noarch",
                                      "os_min_ver": "6.1-15047"})
    build_spk(packages / "old.spk", {"package": "old", "version": "0.9", "arch": "noarch", "os_min_ver": None,
                                     "firmware": "3.1-1594"})
    server = run_server("--packages", str(packages))
    assert wait_for(lambda: all("md5" in p for p in server.json("/v1/packages")))
    return server


def test_a_healthy_spklite_passes_with_every_download_verified(healthy: Any) -> None:
    status, output = doctor(healthy.url + "/")
    assert status == 0, output
    assert "ERROR" not in output
    for dsm in ("DSM 7.2.2-72806", "DSM 6.2.4-25556", "DSM 5.0-4458"):
        assert lines_with(output, dsm)[0].startswith("OK"), output
    assert "apollolake 2, geminilake 2, rtd1296 2 packages" in output  # web and base
    assert "cedarview 1, evansport 1 packages" in output  # old, as a bare list
    assert "4/4 files as advertised" in output and "4 md5 checked" in output
    # one icon (the same in every file), a 256 px one, 2 screenshots
    assert "images                    4/4 answer 200" in output
    assert lines_with(output, "dependencies")[0].startswith("OK")
    # the links follow the loopback address doctor used: a NAS could not use them
    assert lines_with(output, "loopback address"), output
    assert output.splitlines()[-1].startswith("summary: 0 errors, 1 warning")


def test_quick_checks_downloads_with_head(healthy: Any) -> None:
    status, output = doctor("--quick", healthy.url)
    assert status == 0, output
    assert "4/4 files as advertised (HEAD only)" in output


def test_without_url_it_checks_this_servers_own_url(healthy: Any, tmp_path: Path) -> None:
    # the server binds 127.0.0.1; doctor, told of a wildcard bind, reaches it on loopback
    status, output = doctor("--home", str(tmp_path / "home"), "--host", "0.0.0.0", "--port", str(healthy.port))
    assert status == 0, output
    assert output.startswith(f"spklite 0.1.0 doctor: http://127.0.0.1:{healthy.port}/ ")


def test_own_url_from_the_effective_config() -> None:
    base = {"host": "0.0.0.0", "port": 8080, "hostname": "", "scheme": ""}
    assert own_url(base) == "http://127.0.0.1:8080/"
    assert own_url({**base, "host": "::"}) == "http://[::1]:8080/"
    assert own_url({**base, "host": "fd00::5"}) == "http://[fd00::5]:8080/"
    assert own_url({**base, "host": "192.168.1.5"}) == "http://192.168.1.5:8080/"
    assert own_url({**base, "hostname": "nas.example:8443/spk", "scheme": "https"}) == "https://nas.example:8443/spk/"
    assert own_url({**base, "hostname": "nas.example"}) == "http://nas.example/"


def test_an_unreachable_source_is_one_line() -> None:
    status, output = doctor(f"http://127.0.0.1:{free_port()}/")
    assert status == 1
    assert len(lines_with(output, "ERROR")) == 1 and "Connection refused" in output, output


def test_a_silent_source_times_out() -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        started = time.monotonic()
        status, output = doctor("--timeout", "1s", f"http://127.0.0.1:{listener.getsockname()[1]}/")
    assert status == 1 and "no answer in time" in output, output
    assert time.monotonic() - started < 20


def test_a_trickling_download_is_given_up_on(crafted: Callable[..., CraftedSource]) -> None:
    source = crafted()
    source.catalog = lambda build: shaped(build, good_and(source))
    source.trickle.append("/f/other.spk")  # 300 bytes at 20 bytes/s: 15 s
    started = time.monotonic()
    status, output = doctor("--timeout", "1s", source.url + "/")
    assert status == 1, output
    assert lines_with(output, "/f/other.spk: too slow (under 100.0 kB/s): gave up after "), output
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "http://", "http://127.0.0.1:99999/"])
def test_a_url_that_is_not_a_source_is_refused_in_one_line(url: str) -> None:
    status, output = doctor(url)
    assert status == 2 and len(output.strip().splitlines()) == 1, output
    assert output.startswith("spklite: doctor:")


# Crafted sources #############################################################################################


class CraftedSource(LoopbackServer):
    """A stdlib HTTP(S) server on 127.0.0.1: `/` answers `catalog(build)`, `files` maps paths to bytes (anything
    else is a 404), the paths in `trickle` are sent a byte at a time; every request is recorded as (method, path,
    query or form)."""

    def __init__(self, tls: Optional[ssl.SSLContext] = None):
        self.files: Dict[str, bytes] = {}
        self.trickle: List[str] = []
        self.catalog: Callable[[int], bytes] = lambda build: b"[]"
        self.requests: List[Tuple[str, str, str]] = []
        super().__init__(self.handler(), tls)

    def handler(self) -> type:
        source = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                self.answer(True)

            def do_HEAD(self) -> None:
                self.answer(False)

            def do_POST(self) -> None:
                self.answer(True, self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())

            def answer(self, with_body: bool, form: Optional[str] = None) -> None:
                path, _, query = self.path.partition("?")
                source.requests.append((self.command, path, query if form is None else form))
                if path == "/":
                    build = urllib.parse.parse_qs(query if form is None else form)["build"][0]
                    status, body = 200, source.catalog(int(build))
                else:
                    status, body = (200, source.files[path]) if path in source.files else (404, b"not found")
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if with_body and path in source.trickle:
                    for byte in body:  # until the client gives up (a broken pipe ends the handler)
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.05)
                elif with_body:
                    self.wfile.write(body)

        return Handler

    def offer(self, name: str, data: bytes, **fields: Any) -> Dict[str, Any]:
        """A correct catalog entry for a file served at /f/<name> (`fields` override it)."""
        self.files[f"/f/{name}"] = data
        self.files["/i/icon.png"] = b"\x89PNG\r\n\x1a\n icon"
        entry = {"package": name.split(".")[0], "version": "1.0-1", "dname": name, "desc": "",
                 "link": f"{self.url}/f/{name}", "size": len(data), "md5": hashlib.md5(data).hexdigest(),
                 "thumbnail": [f"{self.url}/i/icon.png"], "snapshot": [], "qinst": True, "qupgrade": True,
                 "qstart": True, "deppkgs": None}
        entry.update(fields)
        return entry


def shaped(build: int, entries: List[Any]) -> bytes:
    """The catalog answer each DSM build expects (SPEC 1.3)."""
    if build < 5004:
        return json.dumps(entries).encode()
    if build < 40000:
        return json.dumps({"packages": entries, "keyrings": []}).encode()
    return json.dumps({"packages": entries}).encode()


@pytest.fixture
def crafted() -> Iterator[Callable[..., CraftedSource]]:
    started: List[CraftedSource] = []

    def start(tls: Optional[ssl.SSLContext] = None) -> CraftedSource:
        started.append(CraftedSource(tls))
        return started[-1]

    yield start
    for source in started:
        source.stop()


def good_and(source: CraftedSource, **fields: Any) -> List[Dict[str, Any]]:
    return [source.offer("good.spk", b"good package " * 100), source.offer("other.spk", b"other " * 50, **fields)]


def answer(**fields: Any) -> Callable[[CraftedSource, int], bytes]:
    """A correctly shaped catalog of two files, the second one's entry changed by `fields`."""
    return lambda source, build: shaped(build, good_and(source, **fields))


def link_to(path: str) -> Callable[[CraftedSource, int], bytes]:
    return lambda source, build: shaped(build, good_and(source, link=source.url + path))


def only_packages(source: CraftedSource, build: int) -> bytes:
    return json.dumps({"packages": good_and(source)}).encode()


def raw(body: bytes) -> Callable[[CraftedSource, int], bytes]:
    return lambda source, build: body


# (defect, the catalog a source answers for a build, the line that must say it, exit status)
DEFECTS: List[Tuple[str, Callable[[CraftedSource, int], bytes], str, int]] = [
    ("healthy", answer(), "loopback address", 0),
    ("DSM 5 gets an object", lambda s, b: only_packages(s, b) if b < 5004 else shaped(b, good_and(s)),
     "cedarview: a bare list expected (DSM < 5.1), got an object", 1),
    ("DSM 6 without keyrings", only_packages, 'apollolake: {"packages", "keyrings"} expected: no "keyrings" list', 1),
    ("NaN", raw(b'{"packages": [{"package": "x", "size": NaN}]}'), "apollolake: not strict JSON: NaN is not JSON", 1),
    ("bad escape", raw(b'{"packages": [{"package": "\\x"}]}'),
     "apollolake: not strict JSON: Invalid \\escape at line 1 column 28", 1),
    ("not UTF-8", raw(b'{"packages": [{"package": "\xe9"}]}'), "apollolake: not UTF-8 (byte 27)", 1),
    ("size as text", answer(size="300"), 'apollolake: other: "size" is not a byte count', 1),
    ("a name that drives the terminal", answer(package="o\x1b[2Jk", size="300"), 'o\\x1b[2Jk: "size"', 1),
    ("a link that 404s", link_to("/f/gone.spk"), "/f/gone.spk: HTTP 404 Not Found", 1),
    ("a relative link", answer(link="/f/other.spk"), "not an absolute http(s) URL: '/f/other.spk'", 1),
    ("wrong size", answer(size=301), "/f/other.spk: only 300 bytes, the catalog says 301", 1),
    ("wrong md5", answer(md5="0" * 32),
     f"/f/other.spk: md5 {hashlib.md5(b'other ' * 50).hexdigest()}, the catalog says {'0' * 32}", 1),
    ("a missing icon", lambda s, b: shaped(b, good_and(s, thumbnail=[s.url + "/i/x.png"])),
     "/i/x.png: HTTP 404 Not Found", 1),
    ("a package listed twice", lambda s, b: shaped(b, good_and(s) + [s.offer("good.spk", b"good package " * 100)]),
     "apollolake: good is listed 2 times", 1),
    ("a missing dependency", answer(deppkgs="good:nothere"),
     "other needs nothere: not in this source, for DSM 7.2.2 apollolake geminilake rtd1296; DSM 6.2.4", 0),
    ("an old dependency", answer(deppkgs="good>=1.1"), "other needs good >= 1.1: this source has 1.0-1", 0),
]


@pytest.mark.parametrize("defect, catalog, line, status", DEFECTS, ids=[d[0] for d in DEFECTS])
def test_each_defect_is_reported(
    crafted: Callable[..., CraftedSource],
    defect: str,
    catalog: Callable[[CraftedSource, int], bytes],
    line: str,
    status: int,
) -> None:
    source = crafted()
    source.catalog = lambda build: catalog(source, build)
    got, output = doctor(source.url + "/")
    assert got == status, output
    assert verdict_of(output, line) == ("ERROR" if status else "WARN")
    assert "\x1b" not in output  # what the source says is shown escaped


def test_requests_are_the_ones_a_nas_sends_and_quick_uses_head(crafted: Callable[..., CraftedSource]) -> None:
    source = crafted()
    source.catalog = lambda build: shaped(build, good_and(source))
    status, output = doctor("--quick", source.url + "/")
    assert status == 0, output
    catalogs = [r for r in source.requests if r[1] == "/"]
    assert [method for method, _, _ in catalogs] == ["GET"] * 6 + ["POST"] * 2  # DSM 5.0 POSTs its form
    assert "unique=synology_apollolake_ds918+&" in catalogs[0][2]  # the raw +, as DSM sends it
    assert "build=4458" in catalogs[-1][2] and "micro" not in catalogs[-1][2]
    assert {method for method, path, _ in source.requests if path != "/"} == {"HEAD"}


def test_the_download_cap_leaves_the_rest_to_head(crafted: Callable[..., CraftedSource]) -> None:
    source = crafted()
    source.catalog = lambda build: shaped(build, good_and(source, md5="0" * 32))
    status, output = doctor("--max-download", "1K", source.url + "/")
    assert status == 1, output  # good.spk (1,300 bytes) gets a HEAD, other.spk (300) is downloaded: its md5 is wrong
    assert ("GET", "/f/other.spk", "") in source.requests and ("HEAD", "/f/good.spk", "") in source.requests
    assert "1 file past the download cap (--max-download) checked with HEAD only" in output


# TLS #########################################################################################################


@pytest.fixture
def certificate(tmp_path: Path) -> Tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl command."""
    if not shutil.which("openssl"):
        pytest.skip("the openssl command is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "365", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def tls_source(crafted: Callable[..., CraftedSource], certificate: Tuple[Path, Path]) -> CraftedSource:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*map(str, certificate))
    source = crafted(context)
    source.catalog = lambda build: shaped(build, good_and(source))
    return source


def test_a_self_signed_https_source_is_one_clear_line(
    crafted: Callable[..., CraftedSource], certificate: Tuple[Path, Path]
) -> None:
    source = tls_source(crafted, certificate)
    status, output = doctor(source.url + "/")
    assert status == 1, output
    assert len(lines_with(output, "certificate")) == 1, output
    assert lines_with(output, "certificate")[0].startswith("ERROR tls ")
    assert "self-signed certificate" in output and "a NAS refuses this source" in output
    assert len(lines_with(output, "ERROR")) == 1, output  # the rest was checked, without verification, and is fine
    assert "2/2 files as advertised" in output


def test_a_python_without_ssl_checks_http_sources_and_refuses_https(crafted: Callable[..., CraftedSource]) -> None:
    source = crafted()
    source.catalog = lambda build: shaped(build, good_and(source))
    for url, status in ((source.url + "/", 0), ("https://127.0.0.1:1/", 2)):
        done = subprocess.run(
            [sys.executable, "-c", "import sys; sys.modules['ssl'] = None; from spklite.cli import main; "
             f"sys.exit(main(['doctor', '{url}']))"],
            capture_output=True, text=True, timeout=DOCTOR_TIMEOUT, cwd=str(TESTS.parent),
        )
        assert done.returncode == status, done.stdout + done.stderr
    assert done.stderr == "spklite: doctor: this Python has no ssl module (OpenSSL): it cannot use https sources\n"


def test_a_trusted_https_source_passes(crafted: Callable[..., CraftedSource], certificate: Tuple[Path, Path]) -> None:
    source = tls_source(crafted, certificate)
    status, output = doctor(source.url + "/", env={"SSL_CERT_FILE": str(certificate[0])})  # the CA store doctor uses
    assert status == 0, output
    assert lines_with(output, "tls ")[0].startswith("OK    tls")
    assert "trusted by the system CA store" in output
