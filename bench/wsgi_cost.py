"""The Python cost of one catalog request, without network or threads: spklite's WSGI app (built as
`spklite serve` builds it, access log included, and without it) against the floor's Bottle route and its
plain WSGI function answering the same bytes, called in-process.

    wsgi_cost.py HOME PACKAGES CALLS     prints one JSON object (µs per call, cProfile of spklite's calls)

The access log goes to stderr, which the caller points at a file, as it does for the server.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import sys
import time
from typing import Any, Callable, Dict, List

import floor

from spklite import cli, config, server
from spklite.app import make_app
from spklite.index import open_index

DSM7_QUERY = ("arch=apollolake&build=42661&major=7&minor=1&language=enu"
              "&unique=synology_apollolake_918%2B&package_update_channel=stable")
DSM6_BODY = b"arch=armada38x&build=25556&major=6&minor=2&language=enu&unique=synology_armada38x_ds218j"


def environ(method: str) -> Dict[str, Any]:
    """What waitress hands the app for a NAS request."""
    body = DSM6_BODY if method == "POST" else b""
    env = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": "/", "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8080", "HTTP_USER_AGENT": "synology_apollolake_918+",
        "wsgi.url_scheme": "http", "wsgi.version": (1, 0), "wsgi.errors": sys.stderr,
        "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
    }
    if method == "POST":
        env["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    else:
        env["QUERY_STRING"] = DSM7_QUERY
    return env


def call(app: Callable[..., Any], method: str) -> int:
    env = environ(method)
    result = app(env, lambda status, headers, exc_info=None: None)
    return sum(len(chunk) for chunk in result)


def per_call_us(app: Callable[..., Any], method: str, calls: int) -> float:
    call(app, method)  # memo filled
    started = time.perf_counter()
    for _ in range(calls):
        call(app, method)
    return (time.perf_counter() - started) / calls * 1e6


def profile(app: Callable[..., Any], method: str, calls: int, top: int = 16) -> List[List[Any]]:
    """[function, calls per request, own µs, cumulative µs, share of the request] by cumulative time,
    under cProfile (which inflates small functions); the outer wrappers that hold everything are left out."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        call(app, method)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = []
    for (path, _, name), (_, ncalls, own, cumulative, _) in stats.items():
        where = "/".join(path.replace("\\", "/").split("/")[-2:])
        rows.append([f"{where}:{name}", ncalls / calls, own / calls * 1e6, cumulative / calls * 1e6])
    total = max(r[3] for r in rows)
    rows = [r + [r[3] / total] for r in rows if r[3] < 0.9 * total]
    rows.sort(key=lambda r: -r[3])
    return rows[:top]


def main(argv: List[str]) -> int:
    home, packages, calls = argv[1], argv[2], int(argv[3])
    cfg = config.load({"home": home, "filesystem.packages": packages}, {}, create_file=False)
    cli.setup_logging(cfg["log-level"])
    index = open_index(cfg)
    index.load_snapshot()
    index.scan()
    front = make_app(cfg, index, config.keyring_texts(cfg))
    app = server.access_logged(front)
    out: Dict[str, Any] = {}
    for method in ("GET", "POST"):
        size = call(app, method)
        bare = floor.catalog_app(size)
        plain = floor.plain_app(b"".join(front(environ(method), lambda *_: None)))
        out[method] = {"spklite_us": per_call_us(app, method, calls), "floor_us": per_call_us(bare, method, calls),
                       "no_log_us": per_call_us(front, method, calls), "plain_us": per_call_us(plain, method, calls),
                       "bytes": size}
    out["profile"] = profile(app, "GET", calls)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
