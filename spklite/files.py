"""Sending one indexed package file: conditional GET, a single range, HEAD (SPEC 1.6).

Why not bottle.static_file: it stats the path, then opens the path; a file
replaced in between gets the old size in its headers and the new bytes in
its body. Here the file is opened once and everything comes from that open
file, checked against the index record. Range and date parsing are bottle's.
"""

from __future__ import annotations

import email.utils
import os

import bottle

from spklite.index import signature_of

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import IO, Any, Iterator


def send(path: str, signature: tuple, name: str) -> Any:
    """The response for the file at `path`, or None when it is no longer the indexed version."""
    try:
        fh = open(path, "rb")
    except OSError:
        return None
    st = os.fstat(fh.fileno())
    if signature_of(st) != signature:
        fh.close()  # replaced or changed since it was indexed: the index catches up in a moment
        return None
    env = bottle.request.environ
    etag = '"%x-%x-%x"' % (st.st_ino, st.st_mtime_ns, st.st_size)
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": 'attachment; filename="%s"' % name.replace('"', ""),
        "ETag": etag,
        "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True),
        "Accept-Ranges": "bytes",
        "Content-Length": str(st.st_size),
    }
    if not_modified(env, etag, st.st_mtime):
        fh.close()
        del headers["Content-Length"]
        return bottle.HTTPResponse(status=304, **headers)
    if bottle.request.method == "HEAD":
        fh.close()
        return bottle.HTTPResponse("", **headers)
    if "HTTP_RANGE" not in env:
        return bottle.HTTPResponse(fh, **headers)
    ranges = list(bottle.parse_range_header(env["HTTP_RANGE"], st.st_size))
    if not ranges:
        fh.close()
        return bottle.HTTPResponse(status=416, **{"Content-Range": f"bytes */{st.st_size}"})
    start, end = ranges[0]
    fh.seek(start)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{st.st_size}"
    headers["Content-Length"] = str(end - start)
    return bottle.HTTPResponse(streamed(fh, end - start), status=206, **headers)


def not_modified(env: dict, etag: str, mtime: float) -> bool:
    """RFC 9110 13.1: If-None-Match decides when present; else If-Modified-Since."""
    if "HTTP_IF_NONE_MATCH" in env:
        tags = [t.strip() for t in env["HTTP_IF_NONE_MATCH"].split(",")]
        return "*" in tags or etag in tags or "W/" + etag in tags
    since = bottle.parse_date(env.get("HTTP_IF_MODIFIED_SINCE", "").split(";")[0].strip())
    return since is not None and since >= int(mtime)


def streamed(fh: IO[bytes], length: int) -> Any:
    """The open file from its position for `length` bytes.

    Under waitress the file itself goes back: waitress sends a file wrapper
    from its event loop, from the current position for Content-Length bytes,
    so no worker thread is held and there is no per-chunk Python work.
    """
    wrapper = bottle.request.environ.get("wsgi.file_wrapper")
    if getattr(wrapper, "__module__", "").startswith("waitress"):
        return fh
    return _chunks(fh, length)


def _chunks(fh: IO[bytes], length: int) -> Iterator[bytes]:
    with fh:
        while length > 0:
            chunk = fh.read(min(length, 1 << 20))
            if not chunk:
                return
            length -= len(chunk)
            yield chunk
