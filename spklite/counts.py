"""Download counts and who asks for the catalog, kept in the cache folder without a database (issue 14).

A download is a GET answered with the whole file (200) or with a range from its first byte (206 `bytes 0-`):
a NAS installing, a browser, curl. Not a HEAD, a 304, a 416, nor a range that starts later (a resumed
download, counted when it started). It counts when the answer starts, whether or not the client reads it all.

On disk, in the cache folder (one per instance: two processes never share these files, see `start`):
- `downloads-<N>.log`: one JSON line per download, `[index key, md5 or "", package id]`, appended by one
  write() on an O_APPEND descriptor (about 4 µs; a buffer flushed by a thread would save those and lose the
  last seconds on a kill -9). The kernel holds each line once the answer starts: kill -9 loses none; a power
  cut loses what the kernel had not yet written back (seconds).
- `counts.json`: the totals, rewritten atomically (temp file, fsync, rename) every `server.counts-interval` and
  at a clean stop. It names the last log it holds; those logs are then deleted, and at start the logs it does
  not hold are replayed, so a line counts once whatever moment a crash picks.

A count belongs to a file's index key and its md5: a file replaced by other bytes at the same path starts again
at 0 (the totals of the old bytes are gone with the first download of the new ones, and are not shown for them
meanwhile). While a file's md5 is pending, and with `md5: false`, its count follows the path.

Catalog answers show the counts as of the last write (`shown`, `version`): the answer memo is rebuilt at most
once per interval, never per download. /v1/stats and /metrics read the live numbers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from spklite.index import atomic_write, printable
from spklite.synology import DSM7_BUILD, DSM_BUILDS

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional, Tuple

log = logging.getLogger(__name__)

COUNTS_NAME = "counts.json"
LOCK_NAME = "counts.lock"
LOG_PREFIX, LOG_SUFFIX = "downloads-", ".log"
SCHEMA = 1
MAX_PLATFORMS, MAX_BUILDS = 128, 256  # distinct values remembered (a request names any it likes); then "other"
OTHER = "other"
DSM6_BUILD = next(build for (major, _, _), build in DSM_BUILDS if major == 6)


def is_download(method: str, status: int, content_range: str) -> bool:
    """Whether an answer of the download route counts as a download (see the module's text)."""
    return method == "GET" and (status == 200 or status == 206 and content_range.startswith("bytes 0-"))


def generation(build: Optional[int]) -> str:
    """The DSM generation of a catalog request: "7", "6", "5" (DSM 5 and older) or "none" (no usable build)."""
    if build is None:
        return "none"
    return "7" if build >= DSM7_BUILD else "6" if build >= DSM6_BUILD else "5"


class Asking:
    """Catalog requests by NAS platform, DSM build and DSM generation; bounded; persisted with the counts.

    Counted on the catalog's hot path with plain dict increments and no lock: under the GIL a thread switch
    between the read and the write of one key can lose an increment (3.9 may switch there; 3.10+ only at calls
    and loops, which `d[k] += 1` on str/int keys makes none of). A lost count among thousands is the price of
    not serialising every catalog request on a lock.
    """

    def __init__(self) -> None:
        self.platforms: Dict[str, int] = {}
        self.builds: Dict[Any, int] = {}  # int builds, "none" and "other"
        self.dsm: Dict[str, int] = {}

    def count(self, query: Any) -> None:  # query: catalog.Query
        bump(self.platforms, query.platform or "none", MAX_PLATFORMS)
        bump(self.builds, "none" if query.build is None else query.build, MAX_BUILDS)
        bump(self.dsm, generation(query.build), 4)

    def to_json(self) -> Dict[str, Dict[str, int]]:
        # dict(...) copies in one C call: safe while request threads count
        return {"platforms": sorted_counts(dict(self.platforms)), "builds": sorted_counts(dict(self.builds)),
                "dsm": sorted_counts(dict(self.dsm))}

    def load(self, data: Mapping[str, Any]) -> None:
        self.platforms = {str(k): int(v) for k, v in data["platforms"].items()}
        self.builds = {int(k) if k.isdigit() else str(k): int(v) for k, v in data["builds"].items()}
        self.dsm = {str(k): int(v) for k, v in data["dsm"].items()}


def bump(counter: Dict[Any, int], key: Any, limit: int) -> None:
    if key in counter:
        counter[key] += 1
    elif len(counter) < limit:
        counter[key] = 1
    else:
        counter[OTHER] = counter.get(OTHER, 0) + 1


def sorted_counts(counter: Mapping[Any, int]) -> Dict[str, int]:
    """JSON keys in a stable order: numbers (builds) by value, then names."""
    return {str(k): v for k, v in sorted(counter.items(), key=lambda kv: (not isinstance(kv[0], int), str(kv[0])))}


def counts_for(md5: str, record: Any) -> bool:
    """Whether a count kept under `md5` is the count of `record` (index.Record or None), the file now at its path:
    the same bytes, or bytes not told apart (no md5 on either side)."""
    return record is not None and (not md5 or not record.md5 or md5 == record.md5)


class Counts:
    """The download totals of one cache folder: {index key: [md5, count, package id]}, and the Asking."""

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir
        self.path = os.path.join(cache_dir, COUNTS_NAME)
        self.files: Dict[str, List[Any]] = {}
        self.asking = Asking()
        self.downloads = 0  # counted by this process (/metrics)
        self.shown: Dict[str, Tuple[str, int]] = {}  # the totals as of the last write: what catalogs show
        self.version = 0  # grows when `shown` changes
        self.written: Optional[float] = None  # when counts.json was last written (time.time())
        self.interval = 0.0
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # the thread's write and the last one at stop: one at a time
        self._merged = 0  # counts.json holds the logs up to this one
        self._seq = 1  # the log appended to
        self._fd: Optional[int] = None
        self._lock_fd: Optional[int] = None
        self._changed = False  # downloads since `shown` was made
        self._asking_written: Dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._warned = False
        self.load()

    # -- reading --------------------------------------------------------------------------------------

    def logs(self) -> List[Tuple[int, str]]:
        """(number, path) of the download logs in the cache folder, oldest first."""
        try:
            names = os.listdir(self.cache_dir)
        except OSError:
            return []
        found = []
        for name in names:
            number = name[len(LOG_PREFIX):-len(LOG_SUFFIX)]
            if name.startswith(LOG_PREFIX) and name.endswith(LOG_SUFFIX) and number.isascii() and number.isdigit():
                found.append((int(number), os.path.join(self.cache_dir, name)))
        return sorted(found)

    def load(self) -> None:
        """counts.json, then the logs it does not hold yet (a crash, a kill -9)."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
            if data.get("schema") != SCHEMA:
                raise ValueError(f"schema {data.get('schema')!r}, expected {SCHEMA}")
            files = {str(k): [str(m), int(n), str(p)] for k, (m, n, p) in data["files"].items()}
            asking = Asking()
            asking.load(data["asking"])
            merged, written = int(data["merged"]), float(data["written"])
            self.files, self.asking, self._merged, self.written = files, asking, merged, written
            self._asking_written = asking.to_json()
        except FileNotFoundError:
            pass
        except Exception as exc:  # damaged (a disk fault): start again from the logs
            log.warning("ignoring %s: %s", printable(self.path), printable(str(exc)))
        self._seq = self._merged + 1
        for number, path in self.logs():
            if number > self._merged:
                self._replay(path)
                self._changed = True
            self._seq = max(self._seq, number + 1)
        self._publish()

    def _replay(self, path: str) -> None:
        try:
            with open(path, "rb") as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            log.warning("download log %s not read: %s", printable(path), exc.strerror or exc)
            return
        for line in lines:
            try:
                key, md5, package = json.loads(line)
            except ValueError:  # a line cut short by a power cut
                continue
            if type(key) is str and type(md5) is str and type(package) is str:
                self._count(key, md5, package)

    # -- counting -------------------------------------------------------------------------------------

    def add(self, record: Any) -> None:
        """One download of an index Record."""
        md5, package = record.md5 or "", record.package.info["package"]
        line = (json.dumps([record.path, md5, package]) + "\n").encode()
        with self._lock:  # downloads are few and costly: exact counts, and lines never interleaved
            self._count(record.path, md5, package)
            self.downloads += 1
            self._changed = True
            if self._fd is None and self._lock_fd is not None:
                try:
                    self._fd = os.open(self._log_path(self._seq), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                except OSError as exc:
                    self._failed(exc)
            if self._fd is not None:
                try:
                    os.write(self._fd, line)
                except OSError as exc:
                    self._failed(exc)

    def _count(self, key: str, md5: str, package: str) -> None:
        entry = self.files.get(key)
        if entry is None or md5 and entry[0] and entry[0] != md5:  # new, or other bytes at this path
            entry = self.files[key] = ["", 0, package]
        if md5:
            entry[0] = md5
        entry[1] += 1
        entry[2] = package

    def _log_path(self, number: int) -> str:
        return os.path.join(self.cache_dir, f"{LOG_PREFIX}{number}{LOG_SUFFIX}")

    def _failed(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            log.warning("download counts not saved in %s (%s): counting in memory", printable(self.cache_dir),
                        exc.strerror or exc)

    # -- writing --------------------------------------------------------------------------------------

    def start(self, interval: float) -> bool:
        """From now on (the server, not tools and tests) publish the totals to catalogs every `interval` seconds,
        and persist them when this process gets the cache folder's counts lock. False when it does not (another
        process holds it, or the folder is not writable): this one counts in memory."""
        self.interval = interval
        self._lock_fd = self._take_lock()
        if self._lock_fd is not None:
            self._drop_logs()  # those a crash left after counts.json took them in
        self._thread = threading.Thread(target=self._run, name="spklite-counts", daemon=True)
        self._thread.start()
        return self._lock_fd is not None

    def _take_lock(self) -> Optional[int]:
        import fcntl  # here: only a server takes the lock

        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            fd = os.open(os.path.join(self.cache_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            self._failed(exc)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            log.warning("another spklite counts downloads in %s: this one counts in memory only (give each "
                        "instance its own cache folder)", printable(self.cache_dir))
            return None
        return fd

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.write()

    def stop(self) -> None:
        """The last write, at a clean stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.write()

    def write(self) -> bool:
        """Publish the totals to catalogs and write counts.json when something changed; then drop the logs it
        holds. Only the process that holds the lock writes (the others only publish)."""
        if self._lock_fd is None:
            with self._lock:
                self._publish()
            return False
        with self._writing:
            return self._write()

    def _write(self) -> bool:
        asking = self.asking.to_json()
        with self._lock:
            if not self._changed and asking == self._asking_written and self._seq == self._merged + 1:
                return False
            self._publish()
            merged = self._seq  # the log being appended to closes: the next download opens the next one
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._seq += 1
            files = {key: list(entry) for key, entry in self.files.items()}
        written = time.time()
        data = {"schema": SCHEMA, "merged": merged, "written": written, "files": files, "asking": asking}
        try:
            atomic_write(self.path, json.dumps(data, separators=(",", ":"), sort_keys=True).encode())
        except OSError as exc:
            self._failed(exc)
            return False
        self._merged, self.written, self._asking_written = merged, written, asking
        self._drop_logs()
        return True

    def _drop_logs(self) -> None:
        for number, path in self.logs():
            if number <= self._merged:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _publish(self) -> None:
        if self._changed or not self.version:
            self.shown = {key: (md5, count) for key, (md5, count, _) in self.files.items()}
            self.version += 1
            self._changed = False

    # -- reading the numbers ----------------------------------------------------------------------------

    def shown_for(self, records: Mapping[str, Any]) -> Dict[str, int]:
        """{index key: downloads} of the files in `records` as of the last write: what catalog entries show."""
        counts = {}
        for key, (md5, count) in self.shown.items():
            if counts_for(md5, records.get(key)):
                counts[key] = count
        return counts

    def stats(self, records: Mapping[str, Any], asking: bool) -> Dict[str, Any]:
        """The body of /v1/stats: live download totals per package and file, and who asks (when counted)."""
        with self._lock:
            files = {key: list(entry) for key, entry in self.files.items()}
        packages: Dict[str, Dict[str, Any]] = {}
        for key, (md5, count, package) in sorted(files.items()):
            record = records.get(key)
            current = counts_for(md5, record)
            shown = packages.setdefault(package, {"downloads": 0, "files": {}})
            shown["downloads"] += count
            shown["files"][printable(key)] = {"downloads": count, "md5": md5 or None, "in_index": current,
                                              "version": record.package.info["version"] if current and record else None}
        body: Dict[str, Any] = {
            "downloads": sum(p["downloads"] for p in packages.values()),
            "packages": dict(sorted(packages.items())),
            "catalog": None,
            "counts_written": self.written,
            "counts_interval": self.interval or None,
        }
        if asking:
            numbers = self.asking.to_json()
            body["catalog"] = {"requests": sum(numbers["dsm"].values()), **numbers}
        return body
