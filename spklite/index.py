"""The packages folder as an index: {relative path: Record}, persisted as a JSON snapshot.

`Index.current` is an immutable `State` replaced as a whole; request threads
only read it, so they never wait for the indexer. All writers go through one
lock. The packages folder is only ever read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import sys
import tempfile
import threading
import time
from collections import namedtuple

from spklite import __version__, spk

TYPE_CHECKING = False  # annotations only: see spklite/__init__.py
if TYPE_CHECKING:
    from typing import IO, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

    Signature = Tuple[int, int, int]  # size, mtime_ns, inode

log = logging.getLogger(__name__)

SNAPSHOT_SCHEMA = 2
SNAPSHOT_NAME = "index.jsonl"
BLOB_DIR = "blobs"
TEMP_PREFIX = ".tmp-"  # atomic_write's temp files; a crash may leave some behind


class Record(namedtuple("Record", "path size mtime_ns inode package md5", defaults=(None,))):
    """One valid package file."""

    __slots__ = ()
    path: str  # relative to the packages folder, "/"-separated
    size: int
    mtime_ns: int
    inode: int
    package: spk.Package
    md5: Optional[str]

    @property
    def signature(self) -> Signature:
        return (self.size, self.mtime_ns, self.inode)

    def to_json(self, texts: Dict[str, int]) -> Dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "inode": self.inode,
            "md5": self.md5,
            "package": self.package.to_json(texts),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], texts: List[str]) -> "Record":
        """The inverse of to_json."""
        path, md5 = data["path"], data["md5"]
        if type(path) is not str or (md5 is not None and type(md5) is not str):
            raise ValueError("not a package record: path or md5 is not text")
        package = spk.Package.from_json(data["package"], texts)
        return cls(path, int(data["size"]), int(data["mtime_ns"]), int(data["inode"]), package, md5)


class Rejected(namedtuple("Rejected", "path reason signature")):
    """A .spk file that is not a valid package, and why."""

    __slots__ = ()
    path: str
    reason: str
    signature: Signature

    def to_json(self) -> Dict[str, Any]:
        size, mtime_ns, inode = self.signature
        return {"path": self.path, "reason": self.reason, "size": size, "mtime_ns": mtime_ns, "inode": inode}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Rejected":
        path, reason = data["path"], data["reason"]
        if type(path) is not str or type(reason) is not str:
            raise ValueError("not a rejected file: path or reason is not text")
        return cls(path, reason, (int(data["size"]), int(data["mtime_ns"]), int(data["inode"])))


class State(namedtuple("State", "version records rejected")):
    """An immutable view of the folder. `version` grows with every change."""

    __slots__ = ()
    version: int
    records: Mapping[str, Record]
    rejected: Mapping[str, Rejected]


def is_candidate_name(name: str) -> bool:
    """A file name the index looks at: visible and ending in .spk (so never *.part, *.tmp, *~)."""
    return not name.startswith(".") and name.lower().endswith(".spk")


def signature_of(st: os.stat_result) -> Signature:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class Index:
    """Owns the current State of one packages folder and keeps it true."""

    def __init__(
        self,
        packages_dir: str,
        cache_dir: str,
        *,
        follow_symlinks: bool = False,
        md5: bool = True,
    ):
        self.root = os.path.abspath(packages_dir)
        self.cache_dir = os.path.abspath(cache_dir)
        self.blob_dir = os.path.join(self.cache_dir, BLOB_DIR)
        self.snapshot_path = os.path.join(self.cache_dir, SNAPSHOT_NAME)
        self.follow_symlinks = follow_symlinks
        self.md5 = md5
        self.current = State(0, {}, {})
        self.stats = {"from_snapshot": 0, "parsed": 0}
        self.cache_error: Optional[str] = None
        self._lock = threading.RLock()
        self._dirty = False

    # -- reading the folder ---------------------------------------------------

    def walk(self, under: str = "") -> Iterator[str]:
        """The relative path of every candidate file under the root (or under one of its folders)."""
        seen_dirs = set()
        root_prefix = os.path.join(self.root, "")
        start = os.path.join(self.root, under) if under else self.root
        for top, dirs, files in os.walk(start, followlinks=self.follow_symlinks):
            real = os.path.realpath(top)
            if real in seen_dirs or real == self.cache_dir:  # symlink loops, a cache inside
                dirs[:] = []
                continue
            seen_dirs.add(real)
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            # os.walk's folders start with the root: slicing, not os.path.relpath (half of a warm scan's time)
            folder = top[len(root_prefix):].replace(os.sep, "/") + "/" if top != self.root else ""
            for name in sorted(files):
                if is_candidate_name(name):
                    yield folder + name

    def _outside(self, full: str) -> bool:
        real = os.path.realpath(full)
        return not real.startswith(os.path.realpath(self.root) + os.sep)

    def examine(self, rel: str, previous: State) -> Optional[Any]:
        """The Record or Rejected for one path now, or None when it is gone or ignored.

        Reuses the previous entry when the stat signature is unchanged.
        """
        full = os.path.join(self.root, rel)
        try:
            st = os.stat(full)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        sig = signature_of(st)
        old = previous.records.get(rel) or previous.rejected.get(rel)
        if old is not None and old.signature == sig:
            return old
        if not self.follow_symlinks and os.path.islink(full) and self._outside(full):
            return Rejected(rel, "symbolic link to a file outside the packages folder "
                            "(set follow-symlinks to allow it)", sig)
        try:
            package = spk.read_spk(full, store=self.store_blob)
        except spk.SpkError as exc:
            return Rejected(rel, str(exc), sig)
        self.stats["parsed"] += 1
        # A file that changed while it was read is looked at again on its next event.
        return Record(rel, st.st_size, st.st_mtime_ns, st.st_ino, package)

    def store_blob(self, data: bytes, suffix: str) -> str:
        """Keep an icon or screenshot in the cache under its content hash."""
        name = spk.blob_name(data, suffix)
        target = os.path.join(self.blob_dir, name)
        if not os.path.exists(target):
            try:
                os.makedirs(self.blob_dir, exist_ok=True)
                atomic_write(target, data, durable=False)
            except OSError as exc:
                self._cache_failed(exc)
        return name

    def _cache_failed(self, exc: OSError) -> None:
        if self.cache_error is None:
            log.warning("cache folder %s is not writable (%s): serving from memory", self.cache_dir, exc)
        self.cache_error = f"{exc.strerror or exc}: {getattr(exc, 'filename', '') or self.cache_dir}"

    # -- changing the state -----------------------------------------------------

    def scan(self, progress: Optional[IO[str]] = None) -> State:
        """Reconcile the whole folder with the current state."""
        with self._lock:
            previous = self.current
            if not os.path.isdir(self.root):
                if previous.records or previous.rejected:
                    log.warning("packages folder %s is not available", self.root)
                return self._publish({}, {}, previous)
            paths = list(self.walk())
            records: Dict[str, Record] = {}
            rejected: Dict[str, Rejected] = {}
            for n, rel in enumerate(paths, 1):
                self._sort_into(rel, self.examine(rel, previous), records, rejected)
                if progress is not None and (n % 50 == 0 or n == len(paths)):
                    progress.write(f"\rindexing {n}/{len(paths)}")
                    progress.flush()
            if progress is not None and paths:
                progress.write("\n")
            return self._publish(records, rejected, previous)

    def update(self, rels: Iterable[str]) -> State:
        """Look again at some paths (from the watcher)."""
        with self._lock:
            previous = self.current
            records = dict(previous.records)
            rejected = dict(previous.rejected)
            for rel in rels:
                records.pop(rel, None)
                rejected.pop(rel, None)
                if is_candidate_name(rel.rsplit("/", 1)[-1]):
                    self._sort_into(rel, self.examine(rel, previous), records, rejected)
            return self._publish(records, rejected, previous)

    def remove_tree(self, prefix: str) -> State:
        """Forget every path at or under a relative folder (moved out, deleted)."""
        with self._lock:
            previous = self.current
            keep = lambda p: not (p == prefix or p.startswith(prefix + "/"))  # noqa: E731
            records = {p: r for p, r in previous.records.items() if keep(p)}
            rejected = {p: r for p, r in previous.rejected.items() if keep(p)}
            return self._publish(records, rejected, previous)

    @staticmethod
    def _sort_into(rel: str, found: Any, records: Dict[str, Record], rejected: Dict[str, Rejected]) -> None:
        if isinstance(found, Record):
            records[rel] = found
        elif isinstance(found, Rejected):
            rejected[rel] = found

    def _publish(self, records: Dict[str, Record], rejected: Dict[str, Rejected], previous: State) -> State:
        if records == previous.records and rejected == previous.rejected:
            return previous
        self.current = State(previous.version + 1, dict(sorted(records.items())), dict(sorted(rejected.items())))
        self._dirty = True
        return self.current

    # -- md5, off the request path ------------------------------------------------

    def pending_md5(self) -> List[Record]:
        return [r for r in self.current.records.values() if r.md5 is None] if self.md5 else []

    def fill_md5(self, records: Iterable[Record], stop: Optional[threading.Event] = None,
                 publish_every: float = 0.5) -> int:
        """Hash files and publish their md5s (in batches: each publication is a new state)."""
        done: Dict[str, Tuple[Record, str]] = {}
        last = time.monotonic()
        count = 0
        for record in records:
            if stop is not None and stop.is_set():
                break
            digest = self._md5_of(record, stop)
            if digest:
                done[record.path] = (record, digest)
            if done and time.monotonic() - last >= publish_every:
                count += self._publish_md5(done)
                done, last = {}, time.monotonic()
        return count + self._publish_md5(done)

    def _md5_of(self, record: Record, stop: Optional[threading.Event]) -> Optional[str]:
        digest = hashlib.md5()
        try:
            with open_regular(os.path.join(self.root, record.path)) as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    if stop is not None and stop.is_set():
                        return None
                    digest.update(chunk)
                if signature_of(os.fstat(fh.fileno())) != record.signature:
                    return None  # changed meanwhile: its new version gets its own turn
        except OSError:
            return None
        return digest.hexdigest()

    def _publish_md5(self, done: Mapping[str, Tuple[Record, str]]) -> int:
        with self._lock:
            previous = self.current
            records = dict(previous.records)
            count = 0
            for path, (record, digest) in done.items():
                if records.get(path) == record:
                    records[path] = record._replace(md5=digest)
                    count += 1
            if count:
                self.current = State(previous.version + 1, records, previous.rejected)
                self._dirty = True
            return count

    # -- the snapshot -------------------------------------------------------------

    def load_snapshot(self) -> bool:
        """Start from the saved snapshot when it is ours; False when it was not usable.

        Read a line at a time: one file's JSON is gone before the next is read, so the load's peak memory is
        a line's whatever the folder holds (a whole document at once peaked ~4 MiB over the index at 1,000).
        """
        self._remove_stale_temps()
        records: Dict[str, Record] = {}
        rejected: Dict[str, Rejected] = {}
        try:
            with open(self.snapshot_path, encoding="utf-8") as fh:  # text: json.loads(bytes) would guess per line
                header = json.loads(fh.readline())
                if header.get("schema") != SNAPSHOT_SCHEMA:
                    raise ValueError(f"schema {header.get('schema')!r}, expected {SNAPSHOT_SCHEMA}")
                if header.get("folder") != self.root:
                    raise ValueError(f"made for folder {header.get('folder')!r}")
                texts = header["texts"]
                if type(texts) is not list or not spk.all_str(texts):
                    raise ValueError("texts is not a list of text")
                for line in fh:
                    entry = json.loads(line)
                    if "reason" in entry:
                        found = Rejected.from_json(entry)
                        rejected[found.path] = found
                    else:
                        record = Record.from_json(entry, texts)
                        records[record.path] = record
        except FileNotFoundError:
            return False
        except Exception as exc:  # any damage means: rebuild
            log.warning("ignoring snapshot %s: %s", self.snapshot_path, exc)
            return False
        with self._lock:
            self.current = State(self.current.version + 1, records, rejected)
            self.stats["from_snapshot"] = len(records) + len(rejected)
        return True

    def _remove_stale_temps(self) -> None:
        """Delete the temp files of writes a crash interrupted (kill -9, power cut): never renamed, never used."""
        for folder in (self.cache_dir, self.blob_dir):
            try:
                names = [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]
            except OSError:
                continue
            for name in names:
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError:
                    pass

    def save_snapshot(self, force: bool = False) -> bool:
        """Write the snapshot atomically when something changed since the last write."""
        with self._lock:
            if not (self._dirty or force):
                return False
            state = self.current
            self._dirty = False
        # JSON Lines: a header, then one line per file. INFO values are numbers in the header's "texts": the
        # versions, platforms and DSM builds of one package repeat its texts (at 1,000 files one value in ten
        # is distinct); loaded, each text is one object shared by its records.
        texts: Dict[str, int] = {}
        entries = [r.to_json(texts) for r in state.records.values()] + [r.to_json() for r in state.rejected.values()]
        header = {
            "schema": SNAPSHOT_SCHEMA,
            "spklite": __version__,
            "folder": self.root,
            "written": time.time(),
            "texts": list(texts),
        }
        lines = [json.dumps(entry, separators=(",", ":")) for entry in (header, *entries)]
        try:
            os.makedirs(self.cache_dir, exist_ok=True)
            atomic_write(self.snapshot_path, "\n".join(lines).encode() + b"\n")
        except OSError as exc:
            self._dirty = True
            self._cache_failed(exc)
            return False
        self.cache_error = None
        return True


def atomic_write(path: str, data: bytes, durable: bool = True) -> None:
    """Old or new content at every instant: temp file, fsync, rename, fsync the folder.

    Not `durable`: no fsync (icons can be extracted again; thousands of fsyncs make a slow cold start).
    """
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def open_regular(path: str) -> IO[bytes]:
    """The file at `path` opened for reading; OSError when it is not a regular file.

    O_NONBLOCK: opening a FIFO swapped in under a package's name must not wait (for good, without a
    writer); it is then refused. Cleared once the file is known to be regular.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_index(cfg: Mapping[str, Any]) -> Index:
    return Index(
        cfg["filesystem.packages"],
        cfg["filesystem.cache"],
        follow_symlinks=cfg["follow-symlinks"],
        md5=cfg["md5"],
    )


def scan_command(cfg: Mapping[str, Any], out: IO[str]) -> int:
    """`spklite scan`: refresh the snapshot and print a summary."""
    index = open_index(cfg)
    index.load_snapshot()
    started = time.monotonic()
    index.scan(progress=sys.stderr if sys.stderr.isatty() else None)
    index.fill_md5(index.pending_md5())
    index.save_snapshot(force=True)
    state = index.current
    out.write(
        f"{len(state.records)} packages, {len(state.rejected)} rejected in {index.root} "
        f"({index.stats['from_snapshot']} from snapshot, {index.stats['parsed']} parsed, "
        f"{time.monotonic() - started:.2f} s)\n"
    )
    for rel, rejected in state.rejected.items():
        out.write(f"rejected: {rel}: {rejected.reason}\n")
    if index.cache_error:
        out.write(f"warning: snapshot not written: {index.cache_error}\n")
    return 0
