"""Sending one indexed package file: conditional GET, a single range, HEAD (SPEC 1.6); or having nginx send it.

Why not bottle.static_file: it stats the path, then opens the path; a file
replaced in between gets the old size in its headers and the new bytes in
its body. Here the file is opened once and everything comes from that open
file, checked against the index record, and it is sent only while it stays
the version that was opened (see Unchanged). Range and date parsing are bottle's.
"""

from __future__ import annotations

import email.utils
import logging
import os
import stat
import urllib.parse

import bottle

from spklite.index import signature_of
from spklite.spk import open_regular

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import IO, Any, List, Mapping, Optional, Tuple

log = logging.getLogger(__name__)

# C0 and C1 control characters: never in a header, nor in the name a browser saves under.
# waitress asks a file for as much as the socket's send buffer holds: ~4 MB on loopback, so 8 downloads held
# 30-55 MiB of chunks at once (issue 12). The reads are cut to this: one client's download went faster, not
# slower (2.2 against 1.3 GB/s, the chunks stay in the CPU's caches and the heap).
READ_MAX = 512 << 10
CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)], "_")


def send(path: str, signature: tuple, name: str, md5: Optional[str] = None) -> Any:
    """The response for the file at `path`, or None when it is no longer the indexed version (`signature`,
    whose content has the md5 `md5` when known)."""
    try:
        fh = open_regular(path)  # a FIFO swapped in is refused, not waited on
    except OSError:
        return None
    st = os.fstat(fh.fileno())
    if signature_of(st) != signature:
        fh.close()  # replaced or changed since it was indexed: the index catches up in a moment
        return None
    env = bottle.request.environ
    etag = version_tag(st, md5)
    mtime = st.st_mtime_ns // 1_000_000_000
    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Disposition": disposition(name),
        "ETag": etag,
        "Last-Modified": email.utils.formatdate(mtime, usegmt=True),
        "Accept-Ranges": "bytes",
        "Content-Length": str(st.st_size),
    }
    if not_modified(env, etag, mtime):
        fh.close()
        del headers["Content-Length"]
        return bottle.HTTPResponse(status=304, **headers)
    if bottle.request.method == "HEAD":
        fh.close()
        return bottle.HTTPResponse("", **headers)
    ranges = wanted_ranges(env, etag, mtime, st.st_size)
    if ranges is None:
        return bottle.HTTPResponse(Unchanged(fh, st.st_size, st, path), **headers)
    if not ranges:
        fh.close()
        return bottle.HTTPResponse(status=416, **{"Content-Range": f"bytes */{st.st_size}"})
    start, end = ranges[0]
    fh.seek(start)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{st.st_size}"
    headers["Content-Length"] = str(end - start)
    return bottle.HTTPResponse(Unchanged(fh, end, st, path), status=206, **headers)


def version_tag(st: os.stat_result, md5: Optional[str]) -> str:
    """The file's ETag: its md5 once known, so that replicas (rsync'ed copies: other inodes and ctimes) agree;
    until then its stat signature, ctime included: a same-size copy with its mtime kept (`cp -p`) changes
    nothing else."""
    if md5:
        return f'"{md5}"'
    return '"%x-%x-%x-%x"' % (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


def handed_to_nginx(path: str, signature: tuple, name: str, location: str) -> Any:
    """The answer that has nginx send the file at `path` from its internal `location` (X-Accel-Redirect), or
    None when it is no longer the indexed version.

    nginx answers Range, If-Range, conditional requests and HEAD from the file itself, with its own ETag and
    Last-Modified; of this answer it keeps Content-Type and Content-Disposition, and drops the (empty) body.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode) or signature_of(st) != signature:
        return None
    return bottle.HTTPResponse("", **{"Content-Type": "application/octet-stream",
                                      "Content-Disposition": disposition(name), "X-Accel-Redirect": location})


def disposition(name: str) -> str:
    """`attachment` with the file name twice (RFC 6266): plain ASCII for every client, then RFC 8187's
    UTF-8 form. Control characters become "_"; bytes that are not UTF-8 (os.fsdecode's surrogate
    escapes) become U+FFFD."""
    text = os.fsencode(name).decode("utf-8", "replace").translate(CONTROLS)
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in text)
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{urllib.parse.quote(text, safe='!#$&+^`|')}"


def not_modified(env: Mapping[str, str], etag: str, mtime: int) -> bool:
    """RFC 9110 13.1: If-None-Match decides when present; else If-Modified-Since."""
    if "HTTP_IF_NONE_MATCH" in env:
        tags = [t.strip() for t in env["HTTP_IF_NONE_MATCH"].split(",")]
        return "*" in tags or etag in tags or "W/" + etag in tags
    since = bottle.parse_date(env.get("HTTP_IF_MODIFIED_SINCE", "").split(";")[0].strip())
    return since is not None and since >= mtime


def wanted_ranges(env: Mapping[str, str], etag: str, mtime: int, size: int) -> Optional[List[Tuple[int, int]]]:
    """The byte ranges asked for (none satisfiable: []), or None when the answer is the whole file:
    no Range, a unit other than bytes (RFC 9110 14.2), or an If-Range naming another version."""
    unit, _, spec = env.get("HTTP_RANGE", "").partition("=")
    if unit.strip().lower() != "bytes" or not if_range_holds(env, etag, mtime):
        return None
    return list(bottle.parse_range_header("bytes=" + spec, size))


def if_range_holds(env: Mapping[str, str], etag: str, mtime: int) -> bool:
    """RFC 9110 13.1.5: no If-Range, or it names this version: its ETag (a strong comparison, a weak tag
    never matches) or exactly its Last-Modified date. A resumed download of a replaced file must not get
    the new file's bytes."""
    if "HTTP_IF_RANGE" not in env:
        return True
    validator = env["HTTP_IF_RANGE"].strip()
    if validator.startswith(('"', "W/")):
        return validator == etag
    return bottle.parse_date(validator) == mtime


class FileChanged(OSError):
    """The file being sent was truncated or rewritten in place: what is left to send is not that version."""


class Unchanged:
    """The open file from its position to `end`, readable only while it holds the bytes it was opened with.

    waitress sends a wsgi.file_wrapper from its event loop (no worker thread held): it takes the length
    from seek(0, 2) and sends what read() gives. A file truncated in place then gives nothing, and
    waitress sends nothing and tries again at once, spinning until the channel timeout while the client
    waits; a file rewritten in place gives the new version's bytes after the old one's. Here seek(0, 2)
    is the promised end, and a read that cannot give the opened version's bytes raises FileChanged:
    waitress closes the connection, the client sees a body shorter than its Content-Length.
    """

    def __init__(self, fh: IO[bytes], end: int, opened: os.stat_result, path: str):
        self.fh, self.end, self.opened, self.path = fh, end, opened, path
        self.tell, self.close = fh.tell, fh.close
        self.warned = False

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            return self.fh.seek(self.end + offset)
        return self.fh.seek(offset, whence)

    def read(self, size: int = -1) -> bytes:
        want = min(self.end - self.fh.tell(), READ_MAX)
        if 0 <= size < want:
            want = size
        if want <= 0:
            return b""
        data = self.fh.read(want)
        if len(data) < want or self.rewritten():  # after the read: a writer changes the times, then the bytes
            if not self.warned:
                self.warned = True
                log.warning("%r changed while it was being sent: connection closed", self.path)
            raise FileChanged(f"{self.path!r} changed while it was being sent")
        return data

    def rewritten(self) -> bool:
        """Whether the open file may now hold other bytes than those it was opened with."""
        st, opened = os.fstat(self.fh.fileno()), self.opened
        if st.st_size != opened.st_size or st.st_mtime_ns != opened.st_mtime_ns:
            return True
        if st.st_ctime_ns == opened.st_ctime_ns:
            return False
        # Only the ctime moved: a same-size copy with the mtime kept (`cp -p`, `rsync --inplace -t`), or
        # what leaves the bytes alone: a rename, an atomic replacement or a deletion (the path no longer
        # names this file), a link made, chmod, chown.
        try:
            now = os.stat(self.path)
        except OSError:
            now = None
        same_file = now is not None and (now.st_ino, now.st_dev) == (st.st_ino, st.st_dev)
        if same_file and (st.st_nlink, st.st_mode, st.st_uid, st.st_gid) == (
                opened.st_nlink, opened.st_mode, opened.st_uid, opened.st_gid):
            return True
        self.opened = st  # the same bytes: later changes count from here
        return False


def _not_file_changed(record: logging.LogRecord) -> bool:
    """waitress logs an error raised while it sends as a socket error, with a traceback;
    FileChanged is logged once, in one line, where it is raised."""
    return not (record.exc_info and isinstance(record.exc_info[1], FileChanged))


logging.getLogger("waitress").addFilter(_not_file_changed)
