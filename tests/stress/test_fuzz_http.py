"""Fuzzed HTTP against the real server: no 5xx, a NAS always gets 200 JSON,
nothing outside the served set ever leaks (secrets planted beside, above and
inside the packages folder are searched for in every answer)."""

from __future__ import annotations

import gzip
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spkbuilder import build_spk

from stress import sized
from stress.httpraw import build, exchange

pytestmark = pytest.mark.stress

MiB = 1 << 20
NAS_KEYS = ("arch", "build", "unique")


class Target:
    """The running server, the secrets it must never show, and the tally."""

    def __init__(self, server: Any, secrets_: List[bytes]):
        self.server = server
        self.secrets = secrets_
        self.statuses: Dict[int, int] = {}
        self.cases = 0

    def send(
        self, method: str, target: str, headers: Dict[str, str], body: bytes = b"", nas: bool = False
    ) -> Tuple[int, bytes]:
        request = build(method, target, headers, body)
        status, answer_headers, answer = exchange(self.server.port, request)
        self.cases += 1
        what = f"{request[:300]!r}"
        assert status is not None, f"no answer to {what}"
        self.statuses[status] = self.statuses.get(status, 0) + 1
        assert status < 500, f"{status} for {what}: {answer[:300]!r}"
        if answer_headers.get("content-encoding") == "gzip" and answer:  # asked for with Accept-Encoding
            answer = gzip.decompress(answer)
        for secret in self.secrets:
            assert secret not in answer, f"secret {secret!r} leaked by {what}"
        if nas:
            assert status == 200, f"NAS request got {status}: {what}: {answer[:300]!r}"
            if method != "HEAD":
                body_json = json.loads(answer)
                assert isinstance(body_json, (list, dict)), what
        return status, answer


@pytest.fixture
def target(tmp_path: Path, run_server: Callable[..., Any], figures: Callable[[str], None]):
    token = secrets.token_hex(16).encode()
    srv = tmp_path / "srv"
    packages = srv / "packages"
    (packages / "sub").mkdir(parents=True)
    (tmp_path / "SECRET-above.txt").write_bytes(b"above " + token)
    build_spk(srv / "secret-beside.spk", {"package": "beside", "description": f"beside {token.decode()}"})
    (packages / "notes.txt").write_bytes(b"inside " + token)
    build_spk(packages / ".hidden.spk", {"package": "hidden", "description": f"hidden {token.decode()}"})
    os.symlink("../secret-beside.spk", packages / "link.spk")
    build_spk(packages / "a.spk", {"package": "a"}, icon_256=True, screenshots=2)
    build_spk(packages / "sub" / "b c.spk", {"package": "b", "arch": "x86_64 armv8"})
    server = run_server("--packages", str(packages))
    assert server.json("/health")["packages"] == 2
    t = Target(server, [token, b"root:x:0:0"])
    yield t
    assert server.proc.poll() is None, "the server died"
    assert server.json("/health")["status"] == "ok"
    log = server.output()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
    figures(f"{t.cases} requests, statuses {dict(sorted(t.statuses.items()))}")


# Known attacks, sent as is #################################################################

TRAVERSALS = [
    "../SECRET-above.txt",
    "../../SECRET-above.txt",
    "..%2fsecret-beside.spk",
    "%2e%2e/secret-beside.spk",
    "%2e%2e%2f%2e%2e%2fSECRET-above.txt",
    "%252e%252e%252fsecret-beside.spk",
    "..%252fsecret-beside.spk",
    "%c0%ae%c0%ae/secret-beside.spk",
    "%c0%ae%c0%ae%c0%afsecret-beside.spk",
    "%e0%80%ae%e0%80%ae/secret-beside.spk",
    "..\\secret-beside.spk",
    "..%5csecret-beside.spk",
    "....//secret-beside.spk",
    "sub/../../secret-beside.spk",
    "sub/%2e%2e/%2e%2e/secret-beside.spk",
    "link.spk",
    ".hidden.spk",
    "notes.txt",
    "%2ehidden.spk",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "//etc/passwd",
    "a.spk%00.txt",
    "a.spk%00/../../secret-beside.spk",
    "../home/config.yml",
    "../../home/cache/index.jsonl",
    "..;/secret-beside.spk",
    "a.spk/../../secret-beside.spk",
    "%u002e%u002e/secret-beside.spk",
    "\u2025/secret-beside.spk",
    "%ef%bc%8e%ef%bc%8e/secret-beside.spk",
]
PREFIXES = ["/download/", "/static/", "/v1/packages/", "/", "/download/sub/", "/static/..%2f", "/getList/v0/",
            "/beta/download/", "/beta/", "/beta/..%2fdownload/"]


def test_traversal_and_known_attacks(target: Target):
    for prefix in PREFIXES:
        for tail in TRAVERSALS:
            for method in ("GET", "HEAD"):
                target.send(method, prefix + tail, {})
    nas = "/?arch=apollolake&build=42661&major=7&minor=1&language=enu"
    for extra in (
        "&arch=%zz",
        "&build=%",
        "&build=%c0%ae",
        "&arch=%00",
        "&language=%ff%fe",
        "&arch=" + "A" * 4000,
        "&build=1e400",
        "&build=-1",
        "&build=99999999999999999999999",
        "&micro=6.2",
        "&unique=%e2%80%ae",
        "&package_update_channel=beta&package_update_channel=stable",
        "&arch=apollolake&arch=x86_64",
    ):
        target.send("GET", nas + extra, {}, nas=True)
        target.send(
            "POST", "/", {"Content-Type": "application/x-www-form-urlencoded"}, (nas + extra)[2:].encode(), nas=True
        )
    for alone in ("/?arch=%ff", "/?build=%c0%ae", "/?unique=synology%ff"):  # not UTF-8, yet given (SPEC 1.2)
        target.send("GET", alone, {}, nas=True)
        target.send("POST", "/", {"Content-Type": "application/x-www-form-urlencoded"}, alone[2:].encode(), nas=True)
    # A NAS answer never points outside the package set.
    status, body = target.send("GET", nas, {}, nas=True)
    links = [e["link"] for e in json.loads(body)["packages"]]
    assert len(links) == 2 and all("secret" not in link and "link.spk" not in link for link in links)


# Property-based requests ##################################################################

PIECES = st.sampled_from(
    [
        "..",
        ".",
        "%2e",
        "%2E%2e",
        "%252e",
        "%c0%ae",
        "%c0%af",
        "%00",
        "%",
        "%zz",
        "%2f",
        "%5c",
        "\\",
        "a.spk",
        "sub",
        "b%20c.spk",
        "secret-beside.spk",
        "SECRET-above.txt",
        "link.spk",
        ".hidden.spk",
        "index.jsonl",
        "config.yml",
        "é",
        "%ff",
        "~",
        ";",
        "?",
        "#",
        "\udcc0\udcae\udcc0\udcae",
        "\udcff",
        "\udce0\udc80\udcae",
    ]
)
SEGMENTS = st.lists(st.one_of(PIECES, st.text(max_size=12).map(quote)), max_size=6)
PREFIX = st.sampled_from(
    [
        "/",
        "/download/",
        "/static/",
        "/v1/packages/",
        "/v1/rejected",
        "/health",
        "/about",
        "/v1/models",
        "/v1/explain",
        "/getList/v0/7/1/0/42661/0/apollolake/stable/synology_x/enu",
        "//",
        "/./",
        "*",
        "http://127.0.0.1/",
        "/DOWNLOAD/",
        "/beta/",  # the beta channel's prefix: every route again under it
        "/beta/download/",
        "/beta",
    ]
)
KEYS = st.sampled_from(
    [
        "arch",
        "build",
        "major",
        "minor",
        "micro",
        "nano",
        "language",
        "unique",
        "ds_sn",
        "package_update_channel",
        "timezone",
        "latest",
        "name",
        "model",
        "dsm",
        "platform",
        "channel",
        "package",
        "ar%63h",
        "",
        "%",
        "a[]",
    ]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "apollolake",
            "88f6282",
            "kvmx64",
            "42661",
            "25556",
            "3700",
            "0",
            "-5",
            "7",
            "6.2",
            "enu",
            "synology_apollolake_918+",
            "beta",
            "%zz",
            "%",
            "%c0%ae",
            "%00",
            "%ff%fe",
            "+",
            "&",
            "=",
            "1e9999",
            "x" * 300,
        ]
    ),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30).map(lambda v: quote(v, safe="%&=+")),
)
HUGE = "B" * 1_000_000
RAW = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30),  # spaces, controls
    st.sampled_from(["\udcff", "\udcc0\udcae", "\udced\udca0\udc80"]),
)  # invalid UTF-8 bytes
PAIRS = st.lists(st.tuples(KEYS, VALUES), max_size=6)
METHOD = st.sampled_from(
    ["GET"] * 4 + ["POST"] * 3 + ["HEAD", "OPTIONS", "PUT", "DELETE", "PATCH", "TRACE", "FOO", "get"]
)
HEADERS = st.dictionaries(
    st.sampled_from(
        [
            "Accept",
            "User-Agent",
            "X-Forwarded-For",
            "X-Forwarded-Host",
            "X-Forwarded-Proto",
            "Forwarded",
            "Range",
            "If-None-Match",
            "If-Modified-Since",
            "Cookie",
            "Authorization",
            "Content-Type",
            "Accept-Encoding",
        ]
    ),
    st.sampled_from(
        [
            "text/html",
            "*/*",
            "bytes=0-10",
            "bytes=-1",
            "bytes=99999999-",
            "bytes=5-1,0-0",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "multipart/form-data",
            "gzip",
            "evil.example",
            "for=1.2.3.4;host=evil",
            '"x"',
            "\xff",
            "Sat, 29 Oct 1994 19:43:31 GMT",
            "junk",
        ]
    ),
    max_size=4,
)


def query_text(pairs: List[Tuple[str, str]]) -> str:
    return "&".join(f"{k}={v}" for k, v in pairs)


def is_nas(method: str, path: str, pairs: List[Tuple[str, str]]) -> bool:
    """A request the catalog must answer 200 with JSON (SPEC 1.2), sent within the server's limits."""
    return (
        method in ("GET", "POST", "HEAD")
        and path == "/"
        and any(k in ("arch", "build") or (k == "unique" and v.startswith("synology")) for k, v in pairs)
    )


@settings(
    max_examples=sized(700, 7000),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(
    method=METHOD,
    prefix=PREFIX,
    segments=st.one_of(st.just([]), SEGMENTS),
    query=PAIRS,
    form=PAIRS,
    headers=HEADERS,
    in_body=st.booleans(),
    huge=st.integers(0, 24),
    like_nas=st.booleans(),
    nas_values=st.tuples(VALUES, VALUES),
    raw=st.one_of(st.none(), st.none(), st.none(), RAW),
)
def test_fuzzed_requests(
    target: Target, method, prefix, segments, query, form, headers, in_body, huge, like_nas, nas_values, raw
):
    if like_nas:  # half the requests look like a NAS's (then the other fields add the noise)
        prefix, segments = "/", []
        (form if in_body else query)[:0] = [("arch", nas_values[0]), ("build", nas_values[1])]
    if raw is not None:  # one request in four has raw bytes a URL may not hold
        (form if in_body else query).append(("raw", raw))
    if huge == 0:  # one request in 25 carries a 1 MB value, in the query or the form
        (form if in_body else query).append(("huge", HUGE))
    path = prefix + "/".join(segments)
    target_text = path + ("?" + query_text(query) if query else "")
    body = query_text(form).encode("utf-8", "surrogateescape") if method == "POST" and in_body else b""
    if body:
        headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    # What a NAS could send: a request target of printable ASCII (RFC 9112), within
    # waitress' header limit and bottle's form limit.
    valid = all(33 <= ord(c) <= 126 for c in target_text)
    within_limits = valid and len(target_text) < 60_000 and len(body) < 100_000
    nas = within_limits and (is_nas(method, path, query) or (bool(body) and is_nas(method, path, form)))
    target.send(method, target_text, headers, body, nas=nas)
