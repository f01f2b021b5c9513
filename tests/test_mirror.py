"""`spklite mirror URL`: another source's files for chosen NAS units, copied, verified, resumed and served.

The upstream is a second real spklite process, or a tiny stdlib server on 127.0.0.1 where the source must
misbehave (a corrupted file, a connection cut halfway) or speak like spkrepo (SynoCommunity)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
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

from spklite.index import Index
from spklite.mirror import file_name, plan

RUN_TIMEOUT = 60  # seconds a mirror run may take in these tests


def mirror(home: Path, *args: str) -> Tuple[int, str, str]:
    """Run `python -m spklite mirror ARGS` -> (exit status, stdout, stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "spklite", "mirror", "--home", str(home), *args],
        capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=str(TESTS.parent),
    )
    return done.returncode, done.stdout, done.stderr


def visible(folder: Path) -> List[str]:
    """The package files the index would serve from a folder."""
    return sorted(Index(str(folder), os.devnull).walk())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def downloads(server: Any) -> List[str]:
    """The download requests a spklite process has logged: all of them, as its log thread writes lines in order
    and the line of a request made now is waited for."""
    mark = f"mark={time.monotonic_ns()}"
    assert server.get(f"/about?{mark}")[0] == 200
    assert wait_for(lambda: mark in server.output())
    return [line for line in server.output().splitlines() if '"GET /download/' in line]


# Against a real spklite ######################################################################################


@pytest.fixture
def upstream(tmp_path: Path, run_server: Callable[..., Any]) -> Any:
    """spklite offering, to a DS920+ (geminilake) on DSM 7.2: a.spk and noarch.spk; to others: arm.spk (armv8)
    and dsm6.spk (DSM 6 only) - once every md5 is published."""
    folder = tmp_path / "upstream"
    folder.mkdir()
    build_spk(folder / "a.spk", {"package": "a", "version": "1.0-1", "arch": "geminilake"})
    build_spk(folder / "noarch.spk", {"package": "n", "version": "2.0-1", "arch": "noarch"}, screenshots=1)
    build_spk(folder / "arm.spk", {"package": "arm", "version": "1.0-1", "arch": "armv8"})
    build_spk(folder / "dsm6.spk", {"package": "old", "version": "1.0-1", "arch": "noarch", "os_min_ver": "6.1-15047"})
    server = run_server("--packages", str(folder), home=tmp_path / "home-upstream")
    server.folder = folder

    def ready() -> bool:
        listed = server.json("/v1/packages")
        return len(listed) == 4 and all("md5" in p for p in listed)

    assert wait_for(ready)
    return server


def test_first_run_copies_exactly_the_offered_files_second_run_nothing(upstream: Any, tmp_path: Path) -> None:
    packages = tmp_path / "packages"
    status, out, err = mirror(tmp_path / "home", upstream.url, "--model", "DS920+", "--dsm", "7.2",
                              "--packages", str(packages))
    assert status == 0, out + err
    folder = packages / "mirror" / f"127.0.0.1-{upstream.port}"  # the default: <packages>/mirror/<host>
    assert visible(folder) == ["a.spk", "noarch.spk"]  # not arm.spk (armv8), not dsm6.spk (DSM 6)
    for name in ("a.spk", "noarch.spk"):
        assert (folder / name).read_bytes() == (upstream.folder / name).read_bytes()
    size = sum((upstream.folder / name).stat().st_size for name in ("a.spk", "noarch.spk"))
    assert out.splitlines() == [
        f"mirror of {upstream.url}/ into {folder}: 2 files offered to 1 NAS profile, 2 copied ({size / 1e3:.1f} kB "
        "downloaded), 0 already here, 0 removed, 0 failed"
    ]
    assert err == ""  # not a terminal: no progress line
    assert len(downloads(upstream)) == 2
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    status, out, err = mirror(tmp_path / "home", upstream.url, "--model", "DS920+", "--dsm", "7.2",
                              "--packages", str(packages))
    assert status == 0, out + err
    assert ", 0 copied (0.0 kB downloaded), 2 already here, 0 removed, 0 failed" in out
    assert len(downloads(upstream)) == 2  # nothing asked again
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix == ".spk"} == {
        name: stamp for name, stamp in stamps.items() if name.endswith(".spk")
    }


def test_profiles_are_merged_and_each_file_is_fetched_once(upstream: Any, tmp_path: Path) -> None:
    into = tmp_path / "m"
    status, out, err = mirror(tmp_path / "home", upstream.url, "--platform", "geminilake", "--platform", "rtd1296",
                              "--dsm", "7.2", "--dsm", "6.2", "--into", str(into))
    assert status == 0, out + err
    assert visible(into) == ["a.spk", "arm.spk", "dsm6.spk", "noarch.spk"]
    assert "4 files offered to 4 NAS profiles, 4 copied" in out
    assert len(downloads(upstream)) == 4  # noarch.spk is offered to both platforms: fetched once
    catalogs = [line for line in upstream.output().splitlines() if '"GET /?' in line]
    assert len(catalogs) == 4 and all("package_update_channel=stable" in line for line in catalogs)


def test_the_mirror_is_served_and_offers_the_same_files(
    upstream: Any, tmp_path: Path, run_server: Callable[..., Any]
) -> None:
    packages = tmp_path / "packages"
    status, out, err = mirror(tmp_path / "home", upstream.url, "--model", "DS920+", "--packages", str(packages))
    assert status == 0, out + err
    local = run_server("--packages", str(packages), home=tmp_path / "home-local")
    query = "/?arch=geminilake&build=72806&major=7&minor=2&unique=synology_geminilake_920%2B&language=enu"

    def offered(server: Any) -> Dict[str, Tuple[Any, ...]]:
        return {p["package"]: (p["version"], p["size"], p.get("md5")) for p in server.json(query)["packages"]}

    assert wait_for(lambda: all(md5 for _, _, md5 in offered(local).values()) and len(offered(local)) == 2)
    assert offered(local) == offered(upstream)
    links = [p["link"] for p in local.json(query)["packages"]]
    assert links == [f"{local.url}/download/mirror/127.0.0.1-{upstream.port}/{n}" for n in ("a.spk", "noarch.spk")]


def test_delete_removes_only_files_no_longer_offered(upstream: Any, tmp_path: Path) -> None:
    into = tmp_path / "m"
    args = (upstream.url, "--model", "DS920+", "--into", str(into))
    assert mirror(tmp_path / "home", *args)[0] == 0
    (into / "notes.txt").write_text("the operator's own file")
    (into / "sub").mkdir()
    build_spk(into / "sub" / "own.spk", {"package": "own"})  # below the mirror folder: not the mirror's
    (upstream.folder / "noarch.spk").unlink()
    assert wait_for(lambda: len(upstream.json("/v1/packages")) == 3)

    status, out, err = mirror(tmp_path / "home", *args)  # without --delete nothing goes
    assert status == 0 and ", 1 already here, 0 removed, 0 failed" in out, out + err
    assert (into / "noarch.spk").exists()

    status, out, err = mirror(tmp_path / "home", *args, "--delete")
    assert status == 0 and "1 already here, 1 removed, 0 failed" in out, out + err
    assert visible(into) == ["a.spk", "sub/own.spk"]
    assert (into / "notes.txt").exists()


def test_usage_errors_exit_2_in_one_line(upstream: Any, tmp_path: Path) -> None:
    for args, text in [
        ((upstream.url,), "name the NAS units to mirror for: --model DS920+ or --platform geminilake"),
        ((upstream.url, "--model", "DS9999"), "unknown NAS model 'DS9999'"),
        ((upstream.url, "--platform", "pentium"), "unknown platform 'pentium'"),
        ((upstream.url, "--platform", "geminilake", "--dsm", "8.5"), "unknown DSM version '8.5'"),
        (("ftp://127.0.0.1/", "--platform", "geminilake"), "'ftp://127.0.0.1/' is not an http:// or https:// URL"),
    ]:
        status, out, err = mirror(tmp_path / "home", *args, "--into", str(tmp_path / "m"))
        assert status == 2 and out == "" and err.startswith(f"spklite: mirror: {text}"), err
        assert len(err.splitlines()) == 1
    status, out, err = mirror(tmp_path / "home", upstream.url, "--platform", "x", "--channel", "nightly")
    assert status == 2 and "invalid choice: 'nightly'" in err


# A crafted source ############################################################################################


class Source(LoopbackServer):
    """A stdlib HTTP server on 127.0.0.1: `/` answers `catalog(build)`; `files` maps paths to bytes, served with
    an ETag and single-range support; `moved` maps paths to a redirect's Location; a path in `cut` gets half its
    bytes and a closed connection, once; every request is recorded as (method, path, headers)."""

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.moved: Dict[str, str] = {}
        self.cut: List[str] = []
        self.catalog: Callable[[int], bytes] = lambda build: b'{"packages": []}'
        self.requests: List[Tuple[str, str, Dict[str, str]]] = []
        super().__init__(self.handler())

    def handler(self) -> type:
        source = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                source.requests.append(("GET", path, {k.lower(): v for k, v in self.headers.items()}))
                if path == "/":
                    body = source.catalog(int(urllib.parse.parse_qs(query)["build"][0]))
                    return self.send(200, body, {"Content-Type": "application/json"})
                if path in source.moved:
                    return self.send(302, b"", {"Location": source.moved[path]})
                if path not in source.files:
                    return self.send(404, b"not found", {})
                data = source.files[path]
                etag = '"%s"' % hashlib.md5(data).hexdigest()
                ranged = self.headers.get("Range", "")
                if ranged.startswith("bytes=") and self.headers.get("If-Range", etag) == etag:
                    start = int(ranged[6:].split("-")[0])
                    headers = {"ETag": etag, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
                    return self.send(206, data[start:], headers)
                if path in source.cut:
                    source.cut.remove(path)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("ETag", etag)
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                return self.send(200, data, {"ETag": etag})

            def send(self, status: int, body: bytes, headers: Dict[str, str]) -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def offer(self, path: str, data: bytes, **fields: Any) -> Dict[str, Any]:
        """A DSM 7 catalog entry for `data` served at `path` (`fields` override it)."""
        self.files[path] = data
        entry = {"package": Path(path).stem.split(".")[0], "version": "1.0-1", "link": self.url + path,
                 "size": len(data), "md5": hashlib.md5(data).hexdigest()}
        entry.update(fields)
        return entry


@pytest.fixture
def source() -> Iterator[Source]:
    started = Source()
    yield started
    started.stop()


def dsm7(*entries: Dict[str, Any]) -> Callable[[int], bytes]:
    return lambda build: json.dumps({"packages": list(entries)}).encode()


def test_a_file_corrupted_upstream_is_refused(source: Source, tmp_path: Path) -> None:
    good = source.offer("/f/good.spk", b"good " * 1000)
    bad = source.offer("/f/bad.spk", b"bad " * 1000)
    source.files["/f/bad.spk"] = b"bAd " * 1000  # the same size, other bytes than the catalog's md5 says
    source.catalog = dsm7(good, bad)
    into = tmp_path / "m"
    status, out, err = mirror(tmp_path / "home", source.url, "--platform", "geminilake", "--into", str(into))
    assert status == 1, out + err
    wrong = hashlib.md5(b"bAd " * 1000).hexdigest()
    assert f"bad.spk from {source.url}/f/bad.spk: md5 {wrong}, the catalog says {bad['md5']}: refused" in err
    assert sorted(p.name for p in into.iterdir() if not p.name.startswith(".spklite-mirror")) == ["good.spk"]
    assert "1 copied (9.0 kB downloaded), 0 already here, 0 removed, 1 failed" in out

    source.files["/f/bad.spk"] = b"bad " * 1000  # repaired upstream: the next run takes it
    status, out, err = mirror(tmp_path / "home", source.url, "--platform", "geminilake", "--into", str(into))
    assert status == 0 and "1 copied (4.0 kB downloaded), 1 already here" in out, out + err
    assert md5(into / "bad.spk") == bad["md5"]


def test_an_interrupted_download_resumes_with_range_and_if_range(source: Source, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    entry = source.offer("/pkg/big.spk", data)
    source.catalog = dsm7(entry)
    source.cut.append("/pkg/big.spk")
    into = tmp_path / "m"
    status, out, err = mirror(tmp_path / "home", source.url, "--platform", "geminilake", "--into", str(into))
    assert status == 1, out + err
    assert "big.spk from" in err and "interrupted after 150000 bytes" in err and "the next run resumes" in err
    assert (into / ".big.spk.part").stat().st_size == 150_000
    assert not (into / "big.spk").exists() and visible(into) == []  # the half file is not the index's

    status, out, err = mirror(tmp_path / "home", source.url, "--platform", "geminilake", "--into", str(into))
    assert status == 0, out + err
    assert (into / "big.spk").read_bytes() == data and not (into / ".big.spk.part").exists()
    assert "1 copied (150.0 kB downloaded)" in out  # only the missing half moved
    gets = [headers for method, path, headers in source.requests if path == "/pkg/big.spk"]
    assert len(gets) == 2 and "range" not in gets[0]
    assert gets[1]["range"] == "bytes=150000-" and gets[1]["if-range"] == '"%s"' % entry["md5"]


def test_links_that_redirect_are_followed_and_resumed(source: Source, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    entry = source.offer("/cdn/object-1234", data, link=source.url + "/get/tool.spk")
    source.moved["/get/tool.spk"] = source.url + "/cdn/object-1234"  # as a CDN does
    source.catalog = dsm7(entry)
    source.cut.append("/cdn/object-1234")
    into = tmp_path / "m"
    assert mirror(tmp_path / "home", source.url, "--platform", "geminilake", "--into", str(into))[0] == 1
    status, out, err = mirror(tmp_path / "home", source.url, "--platform", "geminilake", "--into", str(into))
    assert status == 0, out + err
    assert (into / "tool.spk").read_bytes() == data  # named after the link, not the redirect's target
    gets = [headers for method, path, headers in source.requests if path == "/cdn/object-1234"]
    assert gets[-1]["range"] == "bytes=50000-"  # the Range went along with the redirect


def test_a_part_of_a_replaced_file_is_not_glued_to_the_new_one(source: Source, tmp_path: Path) -> None:
    old = source.offer("/pkg/x.spk", b"old " * 50_000)
    source.catalog = dsm7(old)
    source.cut.append("/pkg/x.spk")
    into = tmp_path / "m"
    assert mirror(tmp_path / "home", source.url, "--platform", "geminilake", "--into", str(into))[0] == 1
    new = source.offer("/pkg/x.spk", b"new " * 50_000)  # replaced upstream: the kept part's If-Range fails
    source.catalog = dsm7(new)
    status, out, err = mirror(tmp_path / "home", source.url, "--platform", "geminilake", "--into", str(into))
    assert status == 0, out + err
    assert (into / "x.spk").read_bytes() == b"new " * 50_000


def test_an_spkrepo_answer_is_mirrored_and_served(
    source: Source, tmp_path: Path, run_server: Callable[..., Any]
) -> None:
    """A DSM 7 answer shaped as spkrepo (SynoCommunity) writes it: links with the version and firmware in the
    path, keyrings beside the packages, counts and flags; written here from SPEC 1.5, not copied."""
    builds = tmp_path / "builds"
    builds.mkdir()
    spks = {
        "transmission": build_spk(builds / "t.spk", {"package": "transmission", "version": "4.0.6-27",
                                                     "arch": "x86_64", "os_min_ver": "7.1-42661"}),
        "ffmpeg": build_spk(builds / "f.spk", {"package": "ffmpeg", "version": "6.0.1-11", "arch": "noarch",
                                               "os_min_ver": "7.0-40000"}),
    }
    entries = []
    for name, spk in spks.items():
        data = spk.read_bytes()
        version = "4.0.6-27" if name == "transmission" else "6.0.1-11"
        path = f"/{name}/{version.split('-')[1]}/{name}.v{version.split('-')[1]}.f42661%5Bx86_64-noarch%5D.spk"
        entries.append(source.offer(
            path, data, package=name, version=version, dname=name.title(), desc=f"{name} for DSM 7",
            thumbnail=[f"{source.url}/{name}/{version}/icon_72.png"], qinst=True, qupgrade=True, qstart=True,
            deppkgs=None, conflictpkgs=None, download_count=123456, recent_download_count=789, price=0,
            beta=False, maintainer="SynoCommunity", maintainer_url="https://synocommunity.com",
            changelog="<ul><li>Update</li></ul>", start=True, snapshot=[],
        ))
    entries.append(source.offer("/evil/..%2F..%2Fescape.spk", b"x", package="evil", size=1))
    body = json.dumps({"packages": entries, "keyrings": ["-----BEGIN PGP PUBLIC KEY BLOCK-----\n...\n"]})
    source.catalog = lambda build: body.encode()
    packages = tmp_path / "packages"
    status, out, err = mirror(tmp_path / "home", source.url + "/", "--model", "DS918+", "--dsm", "7.2",
                              "--packages", str(packages))
    assert status == 0, out + err
    catalog = [(method, path, headers) for method, path, headers in source.requests if path == "/"]
    assert len(catalog) == 1 and catalog[0][2]["user-agent"] == "synology_apollolake_918+ DSM7.2-72806 (package)"
    folder = packages / "mirror" / f"127.0.0.1-{source.url.rsplit(':', 1)[1]}"
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith(".spk")) == [
        "_.._escape.spk", "ffmpeg.v11.f42661[x86_64-noarch].spk", "transmission.v27.f42661[x86_64-noarch].spk"
    ]  # the link's ../../ stayed in the name: nothing was written outside the mirror folder
    assert sorted(p.name for p in tmp_path.rglob("*escape*")) == ["_.._escape.spk"]

    local = run_server("--packages", str(packages), home=tmp_path / "home-local")
    query = "/?arch=apollolake&build=72806&major=7&minor=2&language=enu"
    assert wait_for(lambda: all("md5" in p for p in local.json(query)["packages"]))
    offered = {p["package"]: (p["version"], p["md5"]) for p in local.json(query)["packages"]}
    assert offered == {e["package"]: (e["version"], e["md5"]) for e in entries[:2]}
    assert [r["file"] for r in local.json("/v1/rejected")] == [f"{folder.relative_to(packages)}/_.._escape.spk"]


def test_links_merge_and_names_do_not_clash() -> None:
    def entry(link: str, md5: str, size: int = 5) -> Dict[str, Any]:
        return {"package": "p", "version": "1", "link": link, "md5": md5, "size": size}

    wanted, problems = plan("http://s/", [
        entry("http://s/a/x.spk", "a" * 32), entry("http://s/a/x.spk", "a" * 32),  # two units, one file
        entry("http://s/b/X.spk", "b" * 32),  # another file of the same name (names compare as on a NAS share)
        entry("/c/y.spk", "c" * 32),  # relative: taken from the source's URL
        entry("file:///etc/passwd", "d" * 32),
        entry("http://s/a/x.spk", "e" * 32),  # the same link, another md5
    ])
    assert [(w.name, w.link) for w in wanted] == [
        ("x.spk", "http://s/a/x.spk"), ("X-bbbbbbbb.spk", "http://s/b/X.spk"), ("y.spk", "http://s/c/y.spk")]
    assert problems == ["p: no http(s) link ('file:///etc/passwd')",
                        "http://s/a/x.spk: a different size or md5 for different NAS units"]


@pytest.mark.parametrize("link, name", [
    ("http://h/a/b.spk", "b.spk"),
    ("http://h/a/..%2F..%2Fetc%2Fx.spk", "_.._etc_x.spk"),
    ("http://h/a/.hidden.spk", "hidden.spk"),
    ("http://h/a/%0a%1bx.spk", "__x.spk"),
    ("http://h/download?id=5", "p-1.0.spk"),
    ("http://h/" + "n" * 300 + ".spk", "n" * 196 + ".spk"),
])
def test_file_names_stay_in_the_folder_and_visible(link: str, name: str) -> None:
    assert file_name(link, {"package": "p", "version": "1.0"}) == name


# A source that does not answer well ##########################################################################


def test_an_unreachable_source_is_one_line(tmp_path: Path) -> None:
    status, out, err = mirror(tmp_path / "home", f"http://127.0.0.1:{free_port()}/", "--platform", "geminilake",
                              "--into", str(tmp_path / "m"))
    assert status == 1 and out == ""
    assert err.endswith(": Connection refused\n") and len(err.splitlines()) == 1, err


def test_a_silent_source_times_out(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        started = time.monotonic()
        status, out, err = mirror(tmp_path / "home", f"http://127.0.0.1:{listener.getsockname()[1]}/",
                                  "--platform", "geminilake", "--timeout", "1s", "--into", str(tmp_path / "m"))
    assert status == 1 and "no answer in time" in err, err
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("catalog, text", [
    (None, "HTTP 404 Not Found"),
    (b"<html>not a package source</html>", "the answer is not strict JSON: Expecting value at line 1 column 1"),
    (b'{"items": []}', 'the answer is {"packages"} expected, got an object without a "packages" list'),
])
def test_a_bad_catalog_answer_is_explained_and_nothing_is_deleted(
    source: Source, tmp_path: Path, catalog: Optional[bytes], text: str
) -> None:
    into = tmp_path / "m"
    into.mkdir()
    build_spk(into / "kept.spk", {"package": "kept"})
    if catalog is None:
        source.server.RequestHandlerClass.do_GET = lambda self: self.send(404, b"Not Found", {})  # type: ignore
    else:
        source.catalog = lambda build: catalog
    status, out, err = mirror(tmp_path / "home", source.url, "--platform", "geminilake", "--delete",
                              "--into", str(into))
    assert status == 1, out + err
    assert f"spklite: mirror: DSM 7.3.0-86009 geminilake stable: {text}" in err
    assert "--delete skipped: not every catalog answered in full" in err
    assert (into / "kept.spk").exists()


def test_progress_on_a_terminal(source: Source, tmp_path: Path) -> None:
    source.catalog = dsm7(source.offer("/f/one.spk", b"1" * 70_000), source.offer("/f/two.spk", b"2" * 30_000))
    master, slave = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "spklite", "mirror", "--home", str(tmp_path / "home"), source.url,
             "--platform", "geminilake", "--into", str(tmp_path / "m")],
            stdout=subprocess.PIPE, stderr=slave, text=True, timeout=RUN_TIMEOUT, cwd=str(TESTS.parent),
        )
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    assert done.returncode == 0, done.stdout
    assert b"2/2 files, 100.0 kB/100.0 kB, " in shown and shown.endswith(b"\r\x1b[K"), shown
    assert "2 copied (100.0 kB downloaded)" in done.stdout
