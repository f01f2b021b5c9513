"""The floor spklite is measured against: the same stack doing no work of its own.

    floor.py PORT SETTINGS_JSON SIZE [FILE]
    floor.py PORT SETTINGS_JSON --wsgi BODY_FILE

`/` (GET and POST) is a minimal Bottle route returning a constant JSON body of SIZE bytes; any other
path is a bare WSGI app returning FILE through wsgi.file_wrapper. With --wsgi, every request gets the
bytes of BODY_FILE (spklite's own answer, gzip's too) with spklite's headers from a plain WSGI function: the raw
server, no framework. waitress runs with SETTINGS_JSON, spklite's own waitress settings (threads,
connection limit, timeouts), so only the application differs. Only bottle and waitress are imported, so
the process's memory is the stack's own.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Callable, Iterable, List

import bottle
import waitress


def catalog_app(size: int) -> bottle.Bottle:
    body = b'{"packages":[' + b" " * max(0, size - 15) + b"]}"
    app = bottle.Bottle()

    @app.route("/", method=["GET", "POST"])
    def root() -> Any:
        bottle.response.content_type = "application/json; charset=utf-8"
        return body

    return app


def file_app(path: str) -> Callable[..., Iterable[bytes]]:
    size = os.path.getsize(path)

    def app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    return app


def plain_app(body: bytes) -> Callable[..., Iterable[bytes]]:
    """The same bytes and headers as spklite's catalog answer, from a plain WSGI function."""
    headers = [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(body))),
               ("Vary", "Accept-Encoding"), ("Access-Control-Allow-Origin", "*")]
    if body.startswith(b"\x1f\x8b"):  # a gzip answer's
        headers.insert(3, ("Content-Encoding", "gzip"))

    def app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "POST":  # read the form, as any server of a POST does
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", headers)
        return [body]

    return app


def main(argv: List[str]) -> int:
    port, settings = int(argv[1]), json.loads(argv[2])
    if argv[3] == "--wsgi":
        with open(argv[4], "rb") as fh:
            app = plain_app(fh.read())
    else:
        catalog = catalog_app(int(argv[3]))
        files = file_app(argv[4]) if len(argv) > 4 else catalog

        def app(environ: dict, start_response: Callable[..., Any]) -> Iterable[bytes]:
            return (catalog if environ.get("PATH_INFO", "/") == "/" else files)(environ, start_response)

    settings.update(host="127.0.0.1", port=port)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # as spklite does: no warning per request
    waitress.serve(app, **settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
