"""Downloads from where bytes are cheap (issue 14): links to the operator's download and static URLs,
X-Accel-Redirect answers for nginx (tests/test_nginx.py runs them with a real nginx), and gzip catalogs."""

from __future__ import annotations

import gzip
import http.client
import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import webtest
from conftest import settings
from spkbuilder import build_broken, build_spk

from spklite import config
from spklite.app import accepts_gzip
from spklite.catalog import Catalog, Links, Query

DSM7 = {"arch": "x86_64", "build": "42661", "major": "7", "minor": "1", "unique": "synology_broadwell_3617xs"}
DSM6 = {"arch": "x86_64", "build": "25556", "major": "6", "minor": "2"}
CDN = "https://cdn.example.com/spk"
STATIC = "https://static.example.com/icons"


@pytest.fixture
def two(packages: Path) -> Path:
    (packages / "sub dir").mkdir()
    build_spk(packages / "a.spk", {"package": "alpha"}, icon_256=True, screenshots=1)
    build_spk(packages / "sub dir" / "b 1%.spk", {"package": "beta"}, icon=False)
    build_broken(packages / "bad.spk", "gzip")
    (packages / "notes.txt").write_text("not a package")
    return packages


# -- settings ---------------------------------------------------------------------


@pytest.mark.parametrize("raw, value", [
    ("https://cdn.example.com/spk/", "https://cdn.example.com/spk"),
    ("http://10.0.0.5:9000/bucket", "http://10.0.0.5:9000/bucket"),
    ("HTTPS://[2001:db8::1]/x%20y", "HTTPS://[2001:db8::1]/x%20y"),
    ("", ""),
])
def test_base_urls(tmp_path: Path, raw: str, value: str) -> None:
    for key in ("router.download-url", "router.static-url"):
        assert settings(tmp_path, **{key: raw})[key] == value


@pytest.mark.parametrize("raw", ["cdn.example.com/spk", "ftp://cdn.example.com", "https://", "https:///x",
                                 "https://cdn.example.com/a b", "https://cdn.example.com/?sig=1",
                                 "https://cdn.example.com/#x", "https://cdn.example.com:99999/",
                                 "https://cdn.example.com/caf\u00e9", "/download"])
def test_bad_base_urls_are_one_line(tmp_path: Path, raw: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        settings(tmp_path, **{"router.download-url": raw})
    assert str(caught.value).startswith("router.download-url: '") and "absolute http or https URL" in str(caught.value)


def test_base_urls_from_the_file_and_environment(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yml").write_text(f"spklite:\n  router:\n    download-url: {CDN}/\n")
    cfg = config.load({"home": str(home)}, {"SPKLITE_ROUTER_STATIC_URL": STATIC}, create_file=False)
    assert (cfg["router.download-url"], cfg["router.static-url"]) == (CDN, STATIC)


@pytest.mark.parametrize("raw, value", [("/_spklite_files", "/_spklite_files"), ("internal/files/", "/internal/files"),
                                        ("", "")])
def test_accel_redirect_prefix(tmp_path: Path, raw: str, value: str) -> None:
    assert settings(tmp_path, **{"router.accel-redirect": raw})["router.accel-redirect"] == value


@pytest.mark.parametrize("raw", ["/", "a b", "/v1", "/download", "/download/x", "/static", "/x/../y"])
def test_bad_accel_redirect_prefixes(tmp_path: Path, raw: str) -> None:
    # Under /download, nginx would hand the redirect back to spklite: a loop.
    with pytest.raises(config.ConfigError) as caught:
        settings(tmp_path, **{"router.accel-redirect": raw})
    assert str(caught.value).startswith("router.accel-redirect: '")


# -- links elsewhere ---------------------------------------------------------------


def test_links_point_at_the_download_and_static_urls(two: Path, make_client: Any) -> None:
    plain, _ = make_client()
    app, index = make_client(**{"router.download-url": CDN + "/", "router.static-url": STATIC})
    entries = {e["package"]: e for e in app.get("/", DSM7).json["packages"]}
    before = {e["package"]: e for e in plain.get("/", DSM7).json["packages"]}
    assert entries["alpha"]["link"] == f"{CDN}/a.spk"
    assert entries["beta"]["link"] == f"{CDN}/sub%20dir/b%201%25.spk"
    alpha = index.current.records["a.spk"].package
    assert entries["alpha"]["thumbnail"] == [f"{STATIC}/{alpha.icon}", f"{STATIC}/{alpha.icon_256}"]
    assert entries["alpha"]["thumbnail_retina"] == [f"{STATIC}/{alpha.icon_256}"]
    assert entries["alpha"]["snapshot"] == [f"{STATIC}/{alpha.screenshots[0]}"]
    # The bundled default icon is no file of the cache's blobs: it stays on spklite.
    assert entries["beta"]["thumbnail"] == ["http://localhost:80/static/spklite-default-icon.png"]
    for name in ("alpha", "beta"):  # md5 and size stay spklite's
        assert (entries[name]["md5"], entries[name]["size"]) == (before[name]["md5"], before[name]["size"])
    assert {f["link"] for f in app.get("/v1/packages").json} == {f"{CDN}/a.spk", f"{CDN}/sub%20dir/b%201%25.spk"}
    # The blobs exist under those names where static-url's copy comes from.
    assert (Path(index.blob_dir) / alpha.icon).is_file()


# -- X-Accel-Redirect --------------------------------------------------------------


def test_accel_redirect_names_the_file_and_sends_no_body(two: Path, make_client: Any) -> None:
    app, _ = make_client(**{"router.accel-redirect": "/_files"})
    for method in (app.get, app.head):
        res = method("/download/sub%20dir/b%201%25.spk", headers={"Range": "bytes=0-9"})
        assert res.status_int == 200 and res.body == b""  # nginx answers the Range, not spklite
        assert res.headers["X-Accel-Redirect"] == "/_files/sub%20dir/b%201%25.spk"
        assert res.headers["Content-Disposition"].startswith('attachment; filename="b 1%.spk"')
        assert res.headers["Content-Type"] == "application/octet-stream"
    for path in ("/download/bad.spk", "/download/notes.txt", "/download/missing.spk", "/download/sub%20dir"):
        res = app.get(path, status=404)
        assert "X-Accel-Redirect" not in res.headers


def test_accel_redirect_only_for_the_indexed_version(two: Path, make_client: Any) -> None:
    """A file replaced by a directory (or anything the index has not seen yet) is looked at again first."""
    app, index = make_client(**{"router.accel-redirect": "/_files"})
    os.unlink(two / "a.spk")
    (two / "a.spk").mkdir()
    assert "X-Accel-Redirect" not in app.get("/download/a.spk", status=404).headers
    assert "a.spk" not in index.current.records


# -- gzip ---------------------------------------------------------------------------


@pytest.mark.parametrize("header, accepted", [
    ("gzip", True), ("deflate, gzip", True), ("GZIP;Q=0.5", True), ("x-gzip", True), ("*", True),
    ("gzip;q=1.000", True), ("br;q=1.0, gzip;q=0.8, *;q=0.1", True), ("identity, *;q=0.001", True),
    ("", False), ("identity", False), ("deflate, br", False), ("gzip;q=0", False), ("gzip; q=0.000", False),
    ("*;q=0", False), ("gzip;q=0, *", False), ("gzip;q=2", False), ("gzip;q=x", False), (",,;", False),
    ("gzip;q=0, gzip;q=0.5", True),
])
def test_accept_encoding(header: str, accepted: bool) -> None:
    assert accepts_gzip(header) is accepted


def request(port: int, method: str = "GET", path: str = "/", body: str = "", **headers: str
            ) -> Tuple[int, Dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if body:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def test_a_real_server_answers_gzip_to_whom_accepts_it(two: Path, run_server: Any) -> None:
    server = run_server("--packages", str(two), "--no-md5")
    get = "/?" + "&".join(f"{k}={v}" for k, v in DSM7.items())
    form = "&".join(f"{k}={v}" for k, v in DSM6.items())
    for method, path, body in (("GET", get, ""), ("POST", "/", form),
                               ("GET", "/getList/v0/7/1/0/42661/0/x86_64/stable/synology_x/enu", "")):
        status, headers, plain = request(server.port, method, path, body)
        assert status == 200 and "Content-Encoding" not in headers and headers["Vary"] == "Accept-Encoding"
        assert json.loads(plain)
        for accept in ("gzip", "deflate, gzip;q=0.5", "*"):
            status, headers, packed = request(server.port, method, path, body, **{"Accept-Encoding": accept})
            assert (status, headers["Content-Encoding"], headers["Vary"]) == (200, "gzip", "Accept-Encoding")
            assert int(headers["Content-Length"]) == len(packed) and gzip.decompress(packed) == plain
        for refused in ("gzip;q=0", "identity", "br"):
            status, headers, body_again = request(server.port, method, path, body, **{"Accept-Encoding": refused})
            assert "Content-Encoding" not in headers and body_again == plain
    # HEAD goes through bottle's "/" route: the same headers.
    status, headers, nothing = request(server.port, "HEAD", get, **{"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Encoding"], headers["Vary"], nothing) == (200, "gzip", "Accept-Encoding", b"")


def test_the_fast_path_and_bottles_route_give_the_same_answer(two: Path, make_client: Any) -> None:
    front, _ = make_client()
    bottle_only = webtest.TestApp(front.app.app)  # the bottle app behind CatalogFront
    for accept in ("gzip", ""):
        fast, slow = (app.get("/", DSM7, headers={"Accept-Encoding": accept}) for app in (front, bottle_only))
        assert fast.body == slow.body
        for name in ("Content-Type", "Content-Length", "Vary", "Content-Encoding"):
            assert fast.headers.get(name) == slow.headers.get(name), name


def test_gzip_is_memoised_counted_and_byte_identical(two: Path, make_client: Any) -> None:
    _, index = make_client()
    state = index.current
    links = Links("http://nas", "/download", "/static", "icon.png")
    query = Query.from_params(DSM7.get)
    first, second = Catalog(state.records.values(), {}), Catalog(state.records.values(), {})
    packed = first.answer(query, links, gzip=True)
    plain = first.answer(query, links)
    assert gzip.decompress(packed) == plain
    assert first.answer(query, links, gzip=True) is packed  # compressed once per state and question
    assert first._memo_bytes == len(plain) + len(packed)  # the memo's bound counts compressed bytes too
    assert second.answer(query, links, gzip=True) == packed  # another process: the same bytes
    assert packed[4:8] == b"\0\0\0\0"  # no time in the header
    # The debug pseudo-package is made per request, and compressed too.
    assert json.loads(gzip.decompress(first.answer(query, links, {"method": "GET"}, gzip=True)))
