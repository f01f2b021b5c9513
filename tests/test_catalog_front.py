"""CatalogFront's shortcut (issue 12.4): a request seen before, as the same strings, is answered from the memo
entry its parsing named. Its answers must be the bytes the full parsing gives, for every kind of request."""

from __future__ import annotations

import gzip
import io
import random
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import pytest
from conftest import settings
from spkbuilder import build_spk

from spklite import catalog as catalog_module
from spklite.app import make_app
from spklite.index import open_index

ARCHES = ("apollolake", "geminilake", "armada38x", "rtd1296", "x86_64", "alpine", "88f6281", "Apollolake", "")
BUILDS = ("25556", "42661", "64570", "42218", "1", "abc", "", "7.1", "99999999999")
LANGUAGES = ("enu", "fre", "ger", "FRE", "jpn", "xx", "")
UNIQUES = ("synology_apollolake_918+", "synology_apollolake_918%2B", "synology_geminilake_920+", "synology_x86_411+II",
           "synology_armada38x_ds218j", "")
HOSTS = ("127.0.0.1:8080", "nas.example.lan", "[::1]:8080", "a b", "x:99999", "", "h" * 300)


@pytest.fixture
def folder(packages: Path) -> Path:
    """Files whose answers differ by build steps, platform, language, channel and model."""
    build_spk(packages / "a7.spk", {"package": "a", "version": "2.0-1", "arch": "noarch", "os_min_ver": "7.0-40000",
                                    "displayname_fre": "A en français", "description_ger": "Deutsch"})
    build_spk(packages / "a6.spk", {"package": "a", "version": "1.0-1", "arch": "noarch", "os_min_ver": "6.1-15047"})
    build_spk(packages / "b.spk", {"package": "b", "version": "1.0-1", "arch": "apollolake geminilake",
                                   "os_min_ver": "7.1-42661", "beta": "yes"}, icon=False)
    build_spk(packages / "c.spk", {"package": "c", "version": "1.0-1", "arch": "armada38x alpine",
                                   "os_max_ver": "7.0-42218", "displayname_jpn": "C"}, icon=False)
    build_spk(packages / "m.spk", {"package": "m", "version": "1.0-1", "arch": "noarch",
                                   "model": "synology_apollolake_918+ synology_geminilake_920+"}, icon=False)
    return packages


def front_and_reference(tmp_path: Path, folder: Path) -> Tuple[Any, Any, Any]:
    """Two apps over the same index: the front under test, and another whose bottle "/" route (full parsing,
    its own memo, no shortcut) gives the reference bytes."""
    cfg = settings(tmp_path / "home", **{"filesystem.packages": str(folder), "md5": False})
    index = open_index(cfg)
    index.scan()
    return make_app(cfg, index), make_app(cfg, index).app, index


def random_request(rng: random.Random) -> Tuple[str, str, str, str, bytes]:
    """(method, query string, Host, scheme, body) as a NAS, an odd client or a hostile one sends them."""
    params = [("arch", rng.choice(ARCHES)), ("build", rng.choice(BUILDS)), ("major", rng.choice("67")),
              ("minor", rng.choice("012")), ("language", rng.choice(LANGUAGES)), ("unique", rng.choice(UNIQUES)),
              ("package_update_channel", rng.choice(("stable", "beta", "BETA", ""))), ("ds_sn", "1234")]
    params = [p for p in params if rng.random() < 0.85]
    rng.shuffle(params)
    if rng.random() < 0.2:  # a repeated key: the last one wins
        params.append((rng.choice(("arch", "build", "language")), rng.choice(ARCHES + BUILDS)))
    text = "&".join(f"{k}={v}" for k, v in params)
    method = rng.choice(("GET", "GET", "POST"))
    query, body = text, b""
    if method == "POST":  # DSM 3-6: the form, sometimes with parameters in the query too
        cut = rng.randrange(len(params) + 1)
        query = "&".join(f"{k}={v}" for k, v in params[:cut])
        body = "&".join(f"{k}={v}" for k, v in params[cut:]).encode()
    elif rng.random() < 0.2:  # a GET's body never counts
        body = b"build=1&arch=armada38x"
    return method, query, rng.choice(HOSTS), rng.choice(("http", "https")), body


def call(app: Callable[..., Any], method: str, query: str, host: str, scheme: str, body: bytes, path: str = "/",
         **headers: str) -> bytes:
    env: Dict[str, Any] = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query, **headers,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": host, "wsgi.url_scheme": scheme, "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    statuses: List[str] = []
    chunks = app(env, lambda status, headers, exc_info=None: statuses.append(status))
    answer = b"".join(chunks)
    return statuses[0].encode() + b" " + answer


def test_channel_prefix_and_gzip_keep_remembered_answers_apart_and_metrics_count_them(tmp_path: Path, folder: Path):
    """/ and /beta/ serve the same folder (one catalog), gzip or not: the same query strings name four answers."""
    front, _, _ = front_and_reference(tmp_path, folder)
    query = "arch=apollolake&build=64570&major=7&minor=2&language=enu"
    kinds = [(path, gz) for path in ("/", "/beta/") for gz in ({}, {"HTTP_ACCEPT_ENCODING": "gzip"})]
    first = [call(front, "GET", query, "nas.lan", "http", b"", path, **gz) for path, gz in kinds]
    assert len(set(first)) == 4
    plain, zipped, beta_plain, beta_zipped = first
    assert b'"package":"b"' in beta_plain and b'"package":"b"' not in plain  # b is a beta file
    assert b"200 OK " + gzip.decompress(zipped[len(b"200 OK "):]) == plain
    assert b"200 OK " + gzip.decompress(beta_zipped[len(b"200 OK "):]) == beta_plain
    for _ in range(3):  # now answered from what was remembered
        assert [call(front, "GET", query, "nas.lan", "http", b"", path, **gz) for path, gz in kinds] == first
    metrics = call(front, "GET", "", "nas.lan", "http", b"", "/metrics").decode()
    answered = re.findall(r'^spklite_catalog_answers_total\{[^}]*\} (\d+)$', metrics, re.M)
    assert sum(map(int, answered)) == 16
    assert 'spklite_requests_total{route="/",status="200"} 16' in metrics


def test_random_profiles_get_the_same_bytes_through_the_shortcut_and_the_full_parsing(tmp_path: Path, folder: Path):
    front, reference, _ = front_and_reference(tmp_path, folder)
    rng = random.Random(20261205)
    requests = [random_request(rng) for _ in range(300)]
    # The same question from each Host and scheme (the links differ), and as a GET, a POST and a GET with a body.
    requests += [(method, query, host, scheme, body) for _, query, _, _, body in requests[:10] for host in HOSTS
                 for scheme in ("http", "https") for method in ("GET", "POST")]
    expected = [call(reference, *request) for request in requests]
    assert len(set(expected)) > 20  # the profiles really ask different questions
    for _ in range(3):  # first seen (parsed, remembered), then answered from what was remembered, in any order
        order = list(range(len(requests)))
        rng.shuffle(order)
        for i in order:
            assert call(front, *requests[i]) == expected[i], requests[i]


def test_a_remembered_request_follows_the_index_to_its_next_state(tmp_path: Path, folder: Path):
    front, reference, index = front_and_reference(tmp_path, folder)
    request = ("GET", "arch=apollolake&build=64570&major=7&minor=2&language=enu", "nas.lan", "http", b"")
    before = call(front, *request)
    assert call(front, *request) == before
    build_spk(folder / "new.spk", {"package": "new", "version": "1.0-1", "arch": "noarch"}, icon=False)
    index.scan()
    after = call(front, *request)
    assert b'"package":"new"' in after and after == call(reference, *request)


def test_what_the_shortcut_remembers_is_bounded_in_count_and_characters(tmp_path: Path, folder: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(catalog_module, "SEEN_ENTRIES", 50)
    monkeypatch.setattr(catalog_module, "SEEN_CHARS", 8000)
    front, reference, _ = front_and_reference(tmp_path, folder)
    for n in range(400):  # distinct queries and Hosts, as a flood would send them
        request = ("GET", f"arch=apollolake&build=64570&language=l{n}&x={'y' * (n % 300)}", f"h{n}.lan", "http", b"")
        assert call(front, *request) == call(reference, *request)
    _, current = front.server.catalog()
    assert 0 < len(current._seen) <= 50 and current._seen_chars <= 8000
    assert current._seen_chars == sum(len(part) for request in current._seen for part in request)
